"""``python -m analysis``: resumable runs (killed + restarted == uninterrupted), report, critical, dispatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis import runner
from analysis.atomic import read_jsonl
from analysis.commands.common import parse_metadata
from analysis.records import RecordStore
from tests.helpers import SAMPLE, analysis_args, needs_tasks, sakura_tasks_available


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


class SimulatedInterruption(RuntimeError):
    """Raised by the fault-injecting ``RecordStore.add`` below (a kill after N records)."""


def _interrupted(monkeypatch, argv, after: int):
    """Run ``argv`` and stop it (as a kill would) right after ``after`` records were appended."""
    real_add = RecordStore.add
    count = [0]

    def add(self, rec):
        real_add(self, rec)
        count[0] += 1
        if count[0] >= after:
            raise SimulatedInterruption(f"stopped after {count[0]} records")

    with monkeypatch.context() as m:
        m.setattr(RecordStore, "add", add)
        with pytest.raises(SimulatedInterruption):
            runner.main(argv)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_qwen2_audio_dir):
    """Uninterrupted lens / trace / heads runs, shared by the tests below."""
    if not (SAMPLE / "data" / "Gender").is_dir() or not sakura_tasks_available():
        pytest.skip("SAKURA sample or the sakura_* lm-eval tasks are not available")
    root = tmp_path_factory.mktemp("analysis_runs")
    m = tiny_qwen2_audio_dir
    assert runner.main(analysis_args("lens", m, root / "lens", "--batch_size", "4")) == 0
    assert runner.main(analysis_args("trace", m, root / "trace", "--rows", "32")) == 0
    assert runner.main(analysis_args("heads", m, root / "heads", "--batch_size", "4", "--K", "3",
                                     "--n_random", "3")) == 0
    return root


@needs_tasks
def test_lens_killed_and_restarted_equals_uninterrupted(runs, tmp_path, monkeypatch, tiny_qwen2_audio_dir):
    argv = analysis_args("lens", tiny_qwen2_audio_dir, tmp_path / "lens", "--batch_size", "4")
    _interrupted(monkeypatch, argv, 3)  # dies inside the first batch of 4
    assert len(read_jsonl(tmp_path / "lens" / "lens_records.jsonl")) == 3
    assert not (tmp_path / "lens" / "lens_summary.json").exists()
    assert runner.main(argv) == 0
    a, b = _files(runs / "lens"), _files(tmp_path / "lens")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    sm = json.loads((runs / "lens" / "lens_summary.json").read_text())
    meta = sm["meta"]
    for key in ("model", "revision", "tasks", "split", "seed", "package_version"):
        assert key in meta
    t = sm["tasks"]["sakura_gender"]
    assert t["n"] == 6 and t["prompt"] == "p3" and set(t["info"]) == {"last", "penultimate", "masked_last"}
    assert {"lens_info.csv", "critical.csv", "figures/lens_layers.png", "figures/lens_layers.svg"} <= set(a)
    # a rerun with other settings into the same folder is refused
    with pytest.raises(SystemExit):
        runner.main(analysis_args("lens", tiny_qwen2_audio_dir, tmp_path / "lens", "--batch_size", "2"))


@needs_tasks
def test_trace_truncated_records_resume(runs, tmp_path, tiny_qwen2_audio_dir):
    src = runs / "trace"
    out = tmp_path / "trace"
    out.mkdir()
    shutil.copy(src / "trace_run.json", out / "trace_run.json")
    lines = (src / "trace_records.jsonl").read_bytes().split(b"\n")
    # two complete records and half of the third, as a kill during a write leaves it
    (out / "trace_records.jsonl").write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][: len(lines[2]) // 2])
    assert runner.main(analysis_args("trace", tiny_qwen2_audio_dir, out, "--rows", "32")) == 0
    a, b = _files(src), _files(out)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    sm = json.loads((src / "trace_summary.json").read_text())["tasks"]["sakura_gender"]
    ex = sm["exclusions"]
    assert sm["n"] == 6 and sm["n_included"] == 6 - ex["excluded"]
    recs = read_jsonl(src / "trace_records.jsonl")
    for r in recs:
        assert ("layer_rr" in r) == (not r["excluded"])


@needs_tasks
def test_heads_killed_and_restarted_equals_uninterrupted(runs, tmp_path, monkeypatch, tiny_qwen2_audio_dir):
    argv = analysis_args("heads", tiny_qwen2_audio_dir, tmp_path / "heads", "--batch_size", "4", "--K", "3",
                 "--n_random", "3")
    _interrupted(monkeypatch, argv, 8)  # calibration split (6) done, evaluation split cut short inside a batch
    assert runner.main(argv) == 0
    a, b = _files(runs / "heads"), _files(tmp_path / "heads")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    sm = json.loads((runs / "heads" / "heads_summary.json").read_text())
    assert sm["K"] == 3 and len(sm["specialists"]) == 3 and sm["calibration"]["n"] == 6
    assert sm["evaluation"]["n"] == 6 and len(sm["evaluation"]["random_auc"]["values"]) == 3
    assert {"head_corr.csv", "heads_scores.csv", "figures/heads_corr.png"} <= set(a)


@needs_tasks
def test_report_and_critical(runs, tmp_path):
    assert runner.main(["critical", str(runs / "lens"), "--out", str(tmp_path / "crit")]) == 0
    tabs = json.loads((tmp_path / "crit" / "critical_tables.json").read_text())
    assert {r["position"] for r in tabs["rows"]} == {"last", "penultimate", "masked_last"}
    assert runner.main(["report", str(runs), str(tmp_path / "crit"), "--out", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    for title in ("## Logit lens", "## Causal tracing", "## Audio-specialist heads", "## Critical layers"):
        assert title in text
    for link in [ln.split("](")[1].rstrip(")") for ln in text.splitlines() if ln.startswith("![")]:
        assert (tmp_path / link).exists(), link


def test_dispatch_and_metadata(capsys):
    assert parse_metadata(['{"data_root": "/x", "split_seed": 1}']) == {"data_root": "/x", "split_seed": 1}
    assert parse_metadata(["data_root=/x", "split_seed=2"]) == {"data_root": "/x", "split_seed": 2}
    for cmd in ("regress", "leaderboard", "compare"):
        try:
            __import__({"regress": "analysis.regress", "leaderboard": "analysis.leaderboard",
                        "compare": "analysis.regress"}[cmd])
        except ImportError:
            assert runner.main([cmd]) == 2
            continue
        with pytest.raises(SystemExit) as e:
            runner.main([cmd, "--help"])
        assert e.value.code == 0
    try:
        import analysis.demo  # noqa: F401
    except ImportError:
        assert runner.main(["demo"]) == 2
    for cmd in ("lens", "trace", "heads", "calibrate", "critical", "report"):
        with pytest.raises(SystemExit) as e:
            runner.main([cmd, "--help"])
        assert e.value.code == 0
    assert runner.main([]) == 2


@needs_tasks
def test_calibrate_with_random_controls(tmp_path, monkeypatch, tiny_qwen2_audio_dir):
    out = tmp_path / "cal"
    argv = analysis_args("calibrate", tiny_qwen2_audio_dir, out, "--kinds", "layer_guided,single_layer",
                         "--random_controls", "2", "--batch_size", "4")
    argv[2] += ",K=3"
    assert runner.main(argv) == 0
    art = json.loads((out / "calibration.json").read_text())
    ctrl = json.loads((out / "calibration_controls.json").read_text())
    assert art["heads"]["K"] == 3 and ctrl["K"] == 3 and set(ctrl["random"]) == {"0", "1"}
    assert set(ctrl["random"]["0"]) == set(art["layer_guided"]["sweep"])  # same strength grid
    # the specialist sweep recomputed on a fresh collection equals the artifact's
    assert ctrl["specialist"] == pytest.approx(art["layer_guided"]["sweep"])
    assert (out / "figures" / "sweep.png").exists() and (out / "figures" / "sweep.svg").exists()
    assert runner.main(["report", str(out)]) == 0
    assert "## Calibration" in (out / "report.md").read_text()


def test_model_commands_load_an_engine_without_an_lm_eval_object(tiny_qwen2_audio_dir, tiny_lm):
    """``load_lm`` goes through ``interventions.load_engine`` (no lm-eval ``LM``, no accelerate state); its items
    and scores equal those ``audio_lalm`` builds for the same requests."""
    import argparse

    import numpy as np
    from lm_eval.api.instance import Instance
    from lm_eval.api.model import LM

    from analysis.commands.common import load_lm
    from audio_tasks.requests import build_items
    from interventions.engine import Engine
    from interventions.scoring import score_items

    lm = load_lm(argparse.Namespace(model_args=f"pretrained={tiny_qwen2_audio_dir},first_token=audiolens",
                                    device="cpu"))
    assert isinstance(lm.engine, Engine) and not isinstance(lm, LM)
    assert lm.first_token == "audiolens" and lm.pretrained == str(tiny_qwen2_audio_dir)
    assert lm.identity == tiny_lm.identity  # the same weights, vocabulary and revision
    wave = (0.1 * np.random.default_rng(4).standard_normal(16000)).astype(np.float32)
    doc = {"user_prompt": "What is the gender of the speaker?", "assistant_prefix": "The speaker's gender is"}
    reqs = [Instance("loglikelihood", doc, ("ctx", c, {"audio": [{"array": wave, "sampling_rate": 16000}]}), j,
                     ("t", 0, 1)) for j, c in enumerate([" male", " female"])]
    a = build_items(lm.engine, reqs, **lm.item_options())
    b = build_items(tiny_lm.engine, reqs, **tiny_lm.item_options())
    assert [it.continuations for it in a] == [it.continuations for it in b]
    # first_token=audiolens reached the items: the labels' first sub-tokens tokenized alone
    assert a[0].first_ids == [lm.engine.encode_text("male")[0], lm.engine.encode_text("female")[0]]
    assert [it.tok.input_ids.tolist() for it in a] == [it.tok.input_ids.tolist() for it in b]
    sa, sb = score_items(lm.engine, a), score_items(tiny_lm.engine, b)
    assert [s.as_results() for s in sa] == [s.as_results() for s in sb]
