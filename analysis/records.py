"""Resumable per-item record store and the atomic summary writers of ``python -m analysis``.

:class:`RecordStore` appends one JSON line per finished item (fsynced) to ``<out>/<analysis>_records.jsonl``,
keyed by ``record['key']``; reopening the file resumes a run (the last record of a key wins). :func:`write_json`
and :func:`write_csv` write summaries atomically (NaN/inf become JSON ``null`` / empty CSV cells).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

from analysis.atomic import append_jsonl, atomic_write_json, atomic_write_text, json_safe, read_jsonl, sweep_stale_temps

__all__ = ["RecordStore", "write_csv", "write_json"]


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV (columns ``fields``, default the first row's keys; None -> empty cell) atomically."""
    fields = list(fields or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return atomic_write_text(path, buf.getvalue())


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (non-finite floats as null, :func:`interventions.atomic.json_safe`) atomically."""
    return atomic_write_json(path, json_safe(obj))


class RecordStore:
    """Append-only JSONL of per-item records keyed by ``record['key']``; the last record of a key wins."""

    def __init__(self, path: Path):
        self.path = Path(path)
        sweep_stale_temps(self.path.parent)  # left by a kill during an atomic write; resuming cleans up
        self.records: dict[str, dict[str, Any]] = {}
        for r in read_jsonl(self.path):
            if isinstance(r, dict) and "key" in r:
                self.records[str(r["key"])] = r

    def done(self, key: str) -> bool:
        """Whether a record of ``key`` is stored."""
        return key in self.records

    def add(self, rec: dict[str, Any]) -> None:
        """Append ``rec`` (made JSON-safe) to the file, fsynced, and keep it under ``rec['key']``."""
        rec = json_safe(rec)
        append_jsonl(self.path, rec)
        self.records[str(rec["key"])] = rec

    def ordered(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The stored records of ``keys``, in that order (keys without a record are left out)."""
        return [self.records[k] for k in keys if k in self.records]
