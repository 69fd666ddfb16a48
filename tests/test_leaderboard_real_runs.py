"""Leaderboard over real lm-eval runs of tiny audio models (two models, baseline and steered),
checked against values computed independently from the samples files."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from unittest import mock

import pytest
from scipy.stats import binomtest


def _evaluate(model_args: str, out: Path, data_root: Path, limit: int = 8) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out))
    with mock.patch("torch.utils.collect_env.get_pretty_env_info", return_value="(stubbed in tests)"):
        res = simple_evaluate(model="audio_lalm", model_args=model_args, tasks=["sakura_gender", "sakura_emotion"],
                              limit=limit, log_samples=True, evaluation_tracker=tracker, bootstrap_iters=0,
                              metadata={"data_root": str(data_root)})
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=samples)
    for t in res["configs"]:
        tracker.save_results_samples(task_name=t, samples=samples[t])


def _acc(out: Path, task: str) -> dict[str, float]:
    f = glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True)[0]
    return {str(json.loads(l)["doc"]["doc_id"]): float(json.loads(l)["acc"]) for l in open(f)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_qwen2_audio_dir, sakura_sample_root):
    from audio_tasks.tiny import build

    root = tmp_path_factory.mktemp("lb")
    other = build("qwen2_audio", root / "tiny_b", seed=1)
    cfgs = {
        "a_base": f"pretrained={tiny_qwen2_audio_dir}",
        "a_steer": f"pretrained={tiny_qwen2_audio_dir},steer=layer_guided,heads=2:1;4:0,alpha=8",
        "b_base": f"pretrained={other}",
        "b_steer": f"pretrained={other},steer=head,heads=3:2;4:1,alpha=8",
    }
    for name, args in cfgs.items():
        _evaluate(args, root / name, sakura_sample_root)
    return root, cfgs


def test_leaderboard_numbers_match_independent_computation(runs, tmp_path):
    import argparse

    from analysis import leaderboard

    root, cfgs = runs
    ns = argparse.Namespace(results=[str(root / n) for n in cfgs], out=str(tmp_path), metric="acc", alpha=0.05)
    assert leaderboard.main(ns) == 0
    lb = leaderboard.build_leaderboard(leaderboard.read_many([str(root / n) for n in cfgs]))
    assert len(lb.rows) == 4
    pvals, cells = [], []
    for name in cfgs:
        row = next(r for r in lb.rows if str(r.run.source).startswith(str(root / name)))
        for task in ("sakura_gender", "sakura_emotion"):
            acc = _acc(root / name, task)
            assert row.cells[task].acc == pytest.approx(sum(acc.values()) / len(acc))
            assert row.cells[task].n == len(acc) == 8
            if name.endswith("steer"):
                base = _acc(root / (name[0] + "_base"), task)
                b01 = sum(1 for d in acc if base[d] == 0 and acc[d] == 1)
                b10 = sum(1 for d in acc if base[d] == 1 and acc[d] == 0)
                p = 1.0 if b01 + b10 == 0 else binomtest(b01, b01 + b10, 0.5).pvalue
                c = row.cells[task]
                assert (c.b01, c.b10) == (b01, b10)
                assert c.delta == pytest.approx(sum(acc.values()) / 8 - sum(base.values()) / 8)
                assert c.pvalue == pytest.approx(p)
                pvals.append(p)
                cells.append(c)
    # Holm over every comparison of the table (tasks and group averages)
    all_cells = [c for r in lb.rows for c in r.cells.values() if c.pvalue is not None]
    ps = [c.pvalue for c in all_cells]
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    m, running, adj = len(ps), 0.0, [0.0] * len(ps)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adj[i] = running
    for c, a in zip(all_cells, adj):
        assert c.p_holm == pytest.approx(a)
    assert (tmp_path / "leaderboard.html").read_text().count("<tr") >= 5
    assert not any("no unsteered baseline" in f for f in lb.flags)


def test_leaderboard_flags_missing_baseline(runs, tmp_path):
    from analysis import leaderboard

    root, cfgs = runs
    lb = leaderboard.build_leaderboard(leaderboard.read_many([str(root / "a_steer"), str(root / "b_base")]))
    assert any("no unsteered baseline" in f for f in lb.flags)
