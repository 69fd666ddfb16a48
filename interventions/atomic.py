"""Crash-safe file writing.

* ``atomic_write_text`` / ``atomic_write_bytes`` / ``atomic_write_json`` write to a temporary file in the
  destination folder, ``fsync`` it and ``os.replace`` it over the destination, so readers only ever see the old
  or the new complete file (never a half-written one), even when the process is killed.
* ``append_jsonl`` / ``read_jsonl`` keep resumable per-sample records: one JSON object per line, each appended
  with a single write and ``fsync``. A killed run can leave a truncated last line; ``read_jsonl`` ignores it
  and the next ``append_jsonl`` cuts it off before appending, so the file stays valid.
* ``json_safe`` turns NaN/inf into ``null`` (JSON has no NaN; a number computed from NaN is never reported);
  ``cache_root`` is the one cache folder (``$AUDIO_LALM_CACHE``, default ``~/.cache/audio_lalm``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "append_jsonl", "iter_jsonl", "read_jsonl",
           "sweep_stale_temps", "json_safe", "cache_root"]

PathLike = str | os.PathLike[str]


def cache_root() -> Path:
    """The cache folder: ``$AUDIO_LALM_CACHE`` when set and non-empty, else ``~/.cache/audio_lalm`` (``~`` expanded)."""
    return Path(os.environ.get("AUDIO_LALM_CACHE") or Path.home() / ".cache" / "audio_lalm").expanduser()


def json_safe(o: Any) -> Any:
    """``o`` with non-finite floats replaced by None, dict keys as strings and arrays/tensors as lists."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if hasattr(o, "tolist"):
        return json_safe(o.tolist())
    return o


def _default_mode(path: Path) -> int:
    """Permissions for a new file: those of the file it replaces, else ``0o666`` minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (best effort: not every platform/filesystem allows opening a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + ``os.replace``).

    Parent folders are created. Returns the destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mode = _default_mode(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(dest.parent)
    return dest


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON (UTF-8, trailing newline) and write it atomically."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=str)
    return atomic_write_text(path, text + "\n")


def _drop_partial_tail(fh: Any) -> None:
    """If the file (opened ``r+b``) does not end with a newline, repair its last line.

    A complete JSON object that only lacks its newline gets the newline; an unparsable fragment left by a
    killed writer is truncated away.
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    # find the start of the last line
    pos, chunk = size, 4096
    start = 0
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        fh.seek(pos)
        block = fh.read(step)
        nl = block.rfind(b"\n")
        if nl >= 0:
            start = pos + nl + 1
            break
    fh.seek(start)
    tail = fh.read()
    try:
        json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        fh.truncate(start)
    else:
        fh.seek(0, os.SEEK_END)
        fh.write(b"\n")


def append_jsonl(path: PathLike, record: Any) -> None:
    """Append one JSON record as a line to ``path`` (created if missing) and fsync it.

    A truncated last line left by a killed run is removed first, so appends after a crash stay parseable.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    with open(dest, "a+b") as fh:
        _drop_partial_tail(fh)
        fh.seek(0, os.SEEK_END)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def iter_jsonl(path: PathLike) -> Iterator[Any]:
    """Yield the records of a JSONL file; a truncated (unparsable) last line is skipped.

    Blank lines are skipped. An unparsable line anywhere else raises ``ValueError`` naming the line, since that
    is corruption rather than an interrupted append.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    for i, raw in enumerate(lines[: last + 1]):
        if not raw.strip():
            continue
        try:
            yield json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if i == last:
                return
            raise ValueError(f"{path}: line {i + 1} is not valid JSON: {exc}") from exc


def read_jsonl(path: PathLike) -> list[Any]:
    """Read all records of a JSONL file (missing file -> ``[]``); a truncated last line is ignored."""
    if not Path(path).exists():
        return []
    return list(iter_jsonl(path))


def sweep_stale_temps(folder: PathLike, *, older_than_s: float = 60.0) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files that an atomic write killed mid-way left in ``folder`` (and below).

    Only files older than ``older_than_s`` are removed: a live write (another process writing into the same
    folder) finishes in milliseconds and is left alone.  Returns the removed paths."""
    import time

    root = Path(folder)
    if not root.is_dir():
        return []
    now, removed = time.time(), []
    for p in root.rglob(".*.tmp"):
        try:
            if p.is_file() and now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed
