"""Leaderboard + results reader on *real* lm-eval 0.4.13 output.

The output folders are produced by ``lm_eval.simple_evaluate`` (a tiny scripted ``LM`` subclass whose answers
are fixed per document, local multiple-choice YAML tasks over local JSONL files) and saved by lm-eval's own
``EvaluationTracker``, exactly as ``lm_eval --output_path DIR --log_samples`` does. ``real_runs`` is shared with
tests/test_regress.py and cached per session.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import shutil
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tests.helpers import MMAU, N_DOCS, SAKURA, SCENARIOS, base_pattern, flip, lmeval_run, real_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return real_runs(tmp_path_factory)


# ---------------------------------------------------------------------------------------------------------
# independent reference computations
# ---------------------------------------------------------------------------------------------------------


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def holm_by_hand(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def mcnemar_by_hand(a: dict[str, bool], b: dict[str, bool]) -> tuple[int, int, float]:
    b01 = sum(1 for d in a if not a[d] and b[d])
    b10 = sum(1 for d in a if a[d] and not b[d])
    p = 1.0 if b01 + b10 == 0 else binomtest(min(b01, b10), b01 + b10, 0.5).pvalue
    return b01, b10, p


# ---------------------------------------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------------------------------------


def test_reader_on_real_lmeval_output(runs: dict[str, Path]) -> None:
    from analysis.results_io import read_run

    folder = runs["drop"]
    model_dir = folder / "org__tiny-a"
    assert len(list(model_dir.glob("results_*.json"))) == 1
    assert len(list(model_dir.glob("samples_sakura_gender_*.jsonl"))) == 1
    run = read_run(folder)
    assert run.model == "org/tiny-a"
    assert run.config == {"steer": "caa", "alpha": "4"}
    assert run.steered and run.source == model_dir
    assert run.model_args == "pretrained=org/tiny-a,dtype=float32,steer=caa,alpha=4"
    assert set(run.tasks) == set(SAKURA + MMAU)
    expected = SCENARIOS["drop"][1]["sakura_gender"]
    t = run.tasks["sakura_gender"]
    assert t.doc_ids == list(expected)  # the doc's own doc_id field, not lm-eval's index
    assert t.by_doc("acc") == {d: float(c) for d, c in expected.items()}
    assert t.accuracy() == pytest.approx(sum(expected.values()) / N_DOCS)
    assert t.has("acc_norm") and not t.has("acc_first_token")
    # agrees with lm-eval's own aggregate
    assert t.accuracy() == pytest.approx(t.reported["acc,none"])
    assert read_run(model_dir).tasks.keys() == run.tasks.keys()  # model subfolder accepted too
    assert not read_run(runs["base"]).steered


def test_reader_newest_file_and_configs_in_one_folder(tmp_path: Path) -> None:
    from analysis.results_io import read_runs

    out = tmp_path / "out"
    old = {"extra_task": base_pattern("extra_task")}
    new = {"extra_task": flip(old["extra_task"], up=5)}
    lmeval_run(tmp_path / "w1", out, "pretrained=org/tiny-c", old)
    lmeval_run(tmp_path / "w2", out, "pretrained=org/tiny-c", new)
    lmeval_run(tmp_path / "w3", out, "pretrained=org/tiny-c,steer=caa,layers=[3,4]", old)
    assert len(list((out / "org__tiny-c").glob("results_*.json"))) == 3
    got = read_runs(out)
    assert len(got) == 2
    plain = next(r for r in got if not r.steered)
    assert plain.accuracy("extra_task") == pytest.approx(sum(new["extra_task"].values()) / N_DOCS)
    steered = next(r for r in got if r.steered)
    assert steered.config == {"steer": "caa", "layers": "[3,4]"}


def test_reader_errors_name_the_folder(tmp_path: Path, runs: dict[str, Path]) -> None:
    from analysis.results_io import ResultsError, read_run

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsError, match=re.escape(str(empty)) + ".*--log_samples"):
        read_run(empty)
    no_samples = tmp_path / "no_samples" / "org__tiny-a"
    no_samples.mkdir(parents=True)
    for f in (runs["base"] / "org__tiny-a").glob("results_*.json"):
        shutil.copy(f, no_samples / f.name)
    with pytest.raises(ResultsError, match=re.escape(str(no_samples)) + ".*--log_samples"):
        read_run(no_samples.parent)


def test_model_args_parsing() -> None:
    from analysis.results_io import EMBEDDED_MODEL, parse_model_args, split_model_args

    args = parse_model_args("pretrained=a/b,dtype=bfloat16,steer=caa,alpha=4,K=8,layers=[10,12],control=random")
    model, cfg = split_model_args(args)
    assert model == "a/b"
    assert cfg == {"steer": "caa", "alpha": "4", "K": "8", "layers": "[10,12]", "control": "random"}
    assert split_model_args(parse_model_args({"steer": "none", "batch_size": 4}))[0] == EMBEDDED_MODEL
    assert parse_model_args({"alpha": 4, "seed": 1}) == parse_model_args("alpha=4,seed=1")


# ---------------------------------------------------------------------------------------------------------
# leaderboard
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def board(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, list[dict[str, str]]]:
    from analysis import leaderboard

    out = tmp_path_factory.mktemp("board")
    parser = argparse.ArgumentParser()
    leaderboard.add_arguments(parser)
    code = leaderboard.main(parser.parse_args([str(p) for p in runs.values()] + ["--out", str(out)]))
    with open(out / "leaderboard.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return out, code, rows


def _row(rows: list[dict[str, str]], model: str, config: str) -> dict[str, str]:
    return next(r for r in rows if r["model"] == model and r["configuration"] == config)


def test_leaderboard_numbers(board: tuple[Path, int, list[dict[str, str]]]) -> None:
    out, code, rows = board
    assert code == 0
    assert len(rows) == 5
    header = list(rows[0].keys())
    cols = [h for h in header if h in SAKURA + MMAU + ["sakura_avg", "mmau_avg"]]
    assert cols == SAKURA + ["sakura_avg"] + MMAU + ["mmau_avg"]

    base = SCENARIOS["base"][1]
    drop = SCENARIOS["drop"][1]
    r = _row(rows, "org/tiny-a", "steer=caa,alpha=4")
    for task in SAKURA + MMAU:
        k = sum(drop[task].values())
        lo, hi = wilson_by_hand(k, N_DOCS)
        assert float(r[task]) == pytest.approx(k / N_DOCS, abs=1e-6)
        assert float(r[f"{task}_ci_low"]) == pytest.approx(lo, abs=1e-5)
        assert float(r[f"{task}_ci_high"]) == pytest.approx(hi, abs=1e-5)
        assert float(r[f"{task}_delta"]) == pytest.approx((k - sum(base[task].values())) / N_DOCS, abs=1e-6)
        b01, b10, p = mcnemar_by_hand(base[task], drop[task])
        assert (int(r[f"{task}_b01"]), int(r[f"{task}_b10"])) == (b01, b10)
        assert float(r[f"{task}_p_mcnemar"]) == pytest.approx(p, rel=1e-4)
    assert (int(r["sakura_gender_b01"]), int(r["sakura_gender_b10"])) == (0, 12)
    assert float(r["sakura_gender_p_mcnemar"]) == pytest.approx(2 * 0.5**12, rel=1e-4)

    # group averages: SAKURA unweighted mean of tracks, MMAU doc-weighted (pooled)
    sak = sum(sum(drop[t].values()) / N_DOCS for t in SAKURA) / 4
    assert float(r["sakura_avg"]) == pytest.approx(sak, abs=1e-6)
    mm = sum(sum(drop[t].values()) for t in MMAU) / (3 * N_DOCS)
    assert float(r["mmau_avg"]) == pytest.approx(mm, abs=1e-6)
    lo, hi = wilson_by_hand(sum(sum(drop[t].values()) for t in MMAU), 3 * N_DOCS)
    assert float(r["mmau_avg_ci_low"]) == pytest.approx(lo, abs=1e-5)
    pooled_b = {(t, d): c for t in MMAU for d, c in base[t].items()}
    pooled_d = {(t, d): c for t in MMAU for d, c in drop[t].items()}
    assert float(r["mmau_avg_p_mcnemar"]) == pytest.approx(mcnemar_by_hand(pooled_b, pooled_d)[2], rel=1e-4)

    # Holm over every comparison in the table
    ps, holms = [], []
    for row in rows:
        for c in cols:
            if row[f"{c}_p_mcnemar"]:
                ps.append(float(row[f"{c}_p_mcnemar"]))
                holms.append(float(row[f"{c}_p_holm"]))
    noise_cmp = 7 + 2  # 7 tasks + 2 groups
    drop_cmp = 7 + 2
    mismatch_cmp = 7 + 2  # mmau_sound and mmau_avg tested on the paired docs (doc sets differ)
    assert len(ps) == noise_cmp + drop_cmp + mismatch_cmp
    assert holms == pytest.approx(holm_by_hand(ps), rel=1e-4)

    # baseline row carries no comparison
    b = _row(rows, "org/tiny-a", "steer=none")
    assert b["sakura_gender_delta"] == "" and b["flags"] == ""


def test_leaderboard_flags(board: tuple[Path, int, list[dict[str, str]]]) -> None:
    out, _, rows = board
    nobase = _row(rows, "org/tiny-b", "steer=caa,alpha=4")
    assert "no unsteered baseline" in nobase["flags"]
    assert nobase["sakura_gender"] != "" and nobase["sakura_gender_p_mcnemar"] == ""
    mism = _row(rows, "org/tiny-a", "steer=caa,alpha=8")
    assert "mmau_sound: doc set differs from baseline" in mism["flags"]
    assert "clip007" in mism["flags"]
    # compared on the paired docs (all but clip007, identical values): no change, McNemar p = 1
    assert "on the 23 paired docs" in mism["flags"] or "paired docs" in mism["flags"]
    assert float(mism["mmau_sound_delta"]) == 0.0 and float(mism["mmau_sound_p_mcnemar"]) == 1.0
    assert (int(mism["mmau_sound_b01"]), int(mism["mmau_sound_b10"])) == (0, 0)
    assert mism["mmau_avg_p_mcnemar"] != ""
    assert mism["sakura_gender_p_mcnemar"] != ""
    md = (out / "leaderboard.md").read_text()
    assert "## Flags" in md and "no unsteered baseline for model org/tiny-b" in md
    assert "doc set differs" in md


def test_leaderboard_html(board: tuple[Path, int, list[dict[str, str]]]) -> None:
    out, _, _ = board
    page = (out / "leaderboard.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert '<table class="lb">' in page and "<th" in page and "sakura_avg" in page and "mmau_avg" in page
    assert page.count("<tr>") == 5 + 1
    assert "<script>" in page and "addEventListener('click'" in page and "<style>" in page
    assert not re.search(r"(src|href)=[\"']https?://", page)  # self-contained
    assert "org/tiny-b" in page and "doc set differs" in page


def test_leaderboard_unreadable_input(tmp_path: Path) -> None:
    from analysis import leaderboard

    parser = argparse.ArgumentParser()
    leaderboard.add_arguments(parser)
    assert leaderboard.main(parser.parse_args([str(tmp_path), "--out", str(tmp_path / "o")])) == 2


def test_columns_and_variants() -> None:
    from analysis.leaderboard import make_columns

    cols = make_columns(["zeta", "sakura_animal_p2", "sakura_gender_p2", "sakura_gender", "mmau_speech",
                         "sakura_language", "mmau_music", "alpha"])
    names = [c.name for c in cols]
    # canonical track order inside each suffix group, base suffix first, averages after their members
    assert names == ["sakura_gender", "sakura_language", "sakura_avg", "sakura_gender_p2", "sakura_animal_p2",
                     "sakura_avg_p2", "mmau_music", "mmau_speech", "mmau_avg", "alpha", "zeta"]
    avg = next(c for c in cols if c.name == "sakura_avg")
    assert avg.absent == ("sakura_emotion", "sakura_animal")
