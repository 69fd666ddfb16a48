"""interventions.atomic (re-exported as analysis.atomic): what tests/test_stats.py does not cover yet: NaN-free
JSON, the cache folder, a failed replace leaving the old file and no temp file, stale-temp sweeping, JSONL errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from interventions import atomic


def test_analysis_atomic_is_the_same_module_surface() -> None:
    import analysis.atomic as a

    assert set(a.__all__) == set(atomic.__all__)
    assert all(getattr(a, name) is getattr(atomic, name) for name in atomic.__all__)  # one home, re-exported


def test_json_safe_turns_non_finite_into_null_and_arrays_into_lists() -> None:
    obj = {1: float("nan"), "b": [1.5, float("inf"), -float("inf")], "c": (np.array([0.5, np.nan]), "s"),
           "t": torch.tensor([[1.0, 2.0]]), "n": np.float64(0.25), "i": 3, "none": None, "flag": True}
    got = atomic.json_safe(obj)
    assert got == {"1": None, "b": [1.5, None, None], "c": [[0.5, None], "s"], "t": [[1.0, 2.0]], "n": 0.25,
                   "i": 3, "none": None, "flag": True}
    text = json.dumps(got, allow_nan=False)  # strict JSON: would raise on any NaN/inf left
    assert "NaN" not in text and "Infinity" not in text
    assert math.isnan(obj[1])  # the input is not modified


def test_cache_root_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDIO_LALM_CACHE", str(tmp_path / "c"))
    assert atomic.cache_root() == tmp_path / "c"
    monkeypatch.setenv("AUDIO_LALM_CACHE", "~/somewhere")
    assert atomic.cache_root() == Path.home() / "somewhere"  # "~" expanded
    monkeypatch.setenv("AUDIO_LALM_CACHE", "")  # empty counts as unset
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert atomic.cache_root() == tmp_path / "home" / ".cache" / "audio_lalm"
    monkeypatch.delenv("AUDIO_LALM_CACHE")
    assert atomic.cache_root() == tmp_path / "home" / ".cache" / "audio_lalm"


def test_failed_replace_keeps_the_old_file_and_removes_the_temp(monkeypatch, tmp_path: Path) -> None:
    p = tmp_path / "summary.json"
    atomic.atomic_write_json(p, {"v": 1})

    def killed(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_json(p, {"v": 2})
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"v": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["summary.json"]
    out = atomic.atomic_write_json(tmp_path / "new" / "deep" / "x.json", {"é": [1, 2]}, indent=None)
    assert out.read_text(encoding="utf-8") == '{"é": [1, 2]}\n'


def test_sweep_stale_temps_removes_only_old_temp_files(tmp_path: Path) -> None:
    old = tmp_path / ".lens_summary.json.abc123.tmp"
    deep = tmp_path / "figures" / ".fig.png.x.tmp"
    fresh = tmp_path / ".records.jsonl.def.tmp"
    keep = tmp_path / "result.tmp"  # not a hidden temp of an atomic write
    for f in (old, deep, fresh, keep):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("partial")
    hour_ago = os.stat(fresh).st_mtime - 3600
    for f in (old, deep, keep):
        os.utime(f, (hour_ago, hour_ago))
    removed = atomic.sweep_stale_temps(tmp_path, older_than_s=60)
    assert sorted(removed) == sorted([old, deep])
    assert not old.exists() and not deep.exists() and fresh.exists() and keep.exists()
    assert atomic.sweep_stale_temps(tmp_path / "missing") == []


def test_jsonl_corruption_names_the_line_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{oops\n{"a": 3}\n')
    with pytest.raises(ValueError, match=rf"{p.name}: line 4 is not valid JSON"):
        atomic.read_jsonl(p)
    p.write_text('{"a": 1}\n\n{"a": 2}\n\n')
    assert atomic.read_jsonl(p) == [{"a": 1}, {"a": 2}]
    atomic.append_jsonl(p, {"a": 3})
    assert [r["a"] for r in atomic.iter_jsonl(p)] == [1, 2, 3]
