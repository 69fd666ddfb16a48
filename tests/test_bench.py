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


def test_flops_only_counts_the_full_architecture_without_weights(tmp_path):
    """--flops-only builds the model on the meta device; checked against the parameter count computed
    here from the published Qwen2-Audio-7B text sizes (hidden 4096, 32 layers, MLP 11008, vocab 156032)."""
    from benchmarks.bench import main

    out = tmp_path / "flops"
    assert main(["--config", "full", "--flops-only", "--docs", "4", "--batch", "4", "--out", str(out)]) == 0
    est = json.loads((out / "flops.json").read_text())
    d, f, L, V = 4096, 11008, 32, 156032
    per_layer = 4 * d * d + 3 * d + 3 * d * f + 2 * d  # q,k,v,o (+ q/k/v biases), gate/up/down, two norms
    assert est["params"]["text_nonembed"] == L * per_layer + d  # + final norm
    assert est["params"]["embed"] == est["params"]["lm_head"] == V * d
    g, a = est["tasks"]["gender"], est["tasks"]["animal"]
    assert g["choices"] == 2 and a["choices"] == 9
    # one prefix pass vs a full forward per choice: more choices, larger FLOP ratio; the cut encoder window
    # is cheaper than the stock 30-s one
    assert 1.5 < g["flop_ratio_per_choice"] < a["flop_ratio_per_choice"]
    assert g["ours_tflop"] < g["ours_30s_window_tflop"]
    assert "Analytic FLOPs" in (out / "flops.md").read_text()
