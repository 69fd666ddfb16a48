"""Smoke test of the benchmark: it completes on the tiny config and writes its reports (never checks a time)."""

from __future__ import annotations

import json


def test_benchmark_tiny_completes(tmp_path):
    from benchmarks.bench import main

    out = tmp_path / "bench"
    assert main(["--device", "cpu", "--config", "tiny", "--docs", "2", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("T1", "T2", "T3", "T4", "T5"):
        assert key in res
    assert res["batch_auto"]["completed"] is True
    md = (out / "results.md").read_text()
    assert "T1" in md and "T5" in md
