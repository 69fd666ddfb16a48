"""Crash-safe file writing (re-exported from :mod:`interventions.atomic`, shared by all layers)."""

from interventions.atomic import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "append_jsonl", "read_jsonl"]
