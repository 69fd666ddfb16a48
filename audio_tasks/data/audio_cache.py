"""Write Hugging Face audio payloads once to a local cache folder, so documents only carry a path.

Cache root: ``$AUDIO_LALM_CACHE`` (default ``~/.cache/audio_lalm``). Audio columns are read with
``datasets.Audio(decode=False)`` (datasets >= 4 would otherwise need torchcodec) and decoded here with
soundfile (libsndfile >= 1.1 also reads MP3 payloads), then stored as WAV.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import soundfile as sf

from interventions.atomic import atomic_write_bytes, cache_root

_PCM_SUBTYPES = {"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}


def safe_name(name: str) -> str:
    """A file-system safe stem for ``name`` (no folders, no odd characters)."""
    stem = Path(str(name)).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "audio"


def cache_audio(value, namespace: str, name: str) -> str:
    """Return the absolute path of a WAV copy of ``value`` under ``cache_root()/namespace/<name>.wav``.

    ``value`` is an undecoded audio cell (``{"bytes": ..., "path": ...}``) or a path. The file is written
    once (atomically); later calls return the existing file.
    """
    dest = cache_root() / namespace / f"{safe_name(name)}.wav"
    if dest.is_file() and dest.stat().st_size > 0:
        return str(dest.resolve())
    if isinstance(value, dict):
        payload, src = value.get("bytes"), value.get("path")
    else:
        payload, src = None, value
    if payload is None:
        if not src or not Path(src).is_file():
            raise FileNotFoundError(f"audio for {name!r} has neither bytes nor a readable path ({src!r})")
        payload = Path(src).read_bytes()
    try:
        info = sf.info(io.BytesIO(payload))
        data, sr = sf.read(io.BytesIO(payload), dtype="float32")
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"cannot decode audio for {name!r} with soundfile: {err}") from err
    subtype = info.subtype if info.subtype in _PCM_SUBTYPES else "PCM_16"  # keep PCM/float depth, else 16 bit
    buf = io.BytesIO()
    sf.write(buf, data, sr, subtype=subtype, format="WAV")
    atomic_write_bytes(dest, buf.getvalue())
    return str(dest.resolve())
