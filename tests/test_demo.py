"""analysis.demo: the exit code reflects every step (a failed analysis makes the demo exit non-zero)."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture
def fake_pipeline(monkeypatch, tmp_path):
    """The demo's expensive steps replaced by recorders (dataset, model, calibration, lm-eval, analyses)."""
    import audio_tasks.calibration
    import audio_tasks.model
    import audio_tasks.synthetic
    from analysis import demo

    calls: list[list[str]] = []
    monkeypatch.setattr(audio_tasks.synthetic, "ensure_dataset", lambda: tmp_path / "data")
    monkeypatch.setattr(audio_tasks.model, "AudioLALM", lambda **kw: object())
    monkeypatch.setattr(audio_tasks.calibration, "run_calibration", lambda *a, **k: None)
    monkeypatch.setattr(demo, "_evaluate", lambda margs, out, limit, bs: {"demo_gender": {"acc": 0.5}})
    return demo, calls


@pytest.mark.parametrize("failing,expected", [(None, 0), ("trace", 1), ("heads-raises", 1), ("report", 1)])
def test_demo_exit_code_reflects_failed_steps(fake_pipeline, monkeypatch, tmp_path, failing, expected):
    demo, calls = fake_pipeline

    def analysis(argv):
        calls.append(argv)
        if argv[0] == "calibrate":  # the demo checks that the artifact exists
            cal = argv[argv.index("--out") + 1]
            os.makedirs(cal, exist_ok=True)
            open(os.path.join(cal, "calibration.json"), "w").write("{}")
            return 0
        if failing == "heads-raises" and argv[0] == "heads":
            raise RuntimeError("boom")
        if argv[0] == "report":
            out = argv[argv.index("--out") + 1]
            if failing != "report":
                open(out, "w").write("# report\n")
            return 2 if failing == "report" else 0
        return 1 if argv[0] == failing else 0

    monkeypatch.setattr(demo, "_analysis", analysis)
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out)])
    assert rc == expected
    assert [c[0] for c in calls] == ["calibrate", "lens", "trace", "heads", "report"]
    summary = json.loads((out / "demo_summary.json").read_text())
    want = {None: [], "trace": ["trace"], "heads-raises": ["heads"], "report": ["report"]}[failing]
    assert summary["failed"] == want
