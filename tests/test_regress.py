"""Regression gate on real lm-eval output pairs (see tests/test_leaderboard.py for how they are produced)."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from scipy.stats import binomtest

from analysis.results_io import read_run
from tests.helpers import N_DOCS, SCENARIOS, real_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return real_runs(tmp_path_factory)


def _regress(*argv: str) -> int:
    from analysis import regress

    parser = argparse.ArgumentParser()
    regress.add_arguments(parser)
    return regress.main(parser.parse_args(list(argv)))


def test_no_change_is_ok(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "ok.xml"
    assert _regress("--baseline", str(runs["base"]), "--candidate", str(runs["base"]), "--junit", str(junit)) == 0
    # symmetric noise (2 docs flip each way per task) is not a regression either
    assert _regress("--baseline", str(runs["base"]), "--candidate", str(runs["noise"])) == 0
    out = capsys.readouterr().out
    assert "OK: no task regresses" in out
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "0" and root.get("errors") == "0"
    assert len(root.findall(".//testcase")) == 7


def test_significant_drop_fails(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "drop.xml"
    code = _regress("--baseline", str(runs["base"]), "--candidate", str(runs["drop"]), "--junit", str(junit))
    assert code == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("sakura_gender "))
    base = sum(SCENARIOS["base"][1]["sakura_gender"].values()) / N_DOCS
    cand = sum(SCENARIOS["drop"][1]["sakura_gender"].values()) / N_DOCS
    p = binomtest(0, 12).pvalue
    assert f"{base:.4f}" in line and f"{cand:.4f}" in line and f"{cand - base:+.4f}" in line
    assert line.split()[5:8] == ["0", "12", f"{p:.3g}"] and "REGRESSION" in line
    assert "FAIL" in out
    root = ET.parse(junit).getroot()
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["sakura_gender"]  # mmau_music moved up, the others did not move
    assert root.get("failures") == "1" and root.get("tests") == "7"
    # a large tolerance or a strict alpha turns the same drop into a pass
    assert _regress("--baseline", str(runs["base"]), "--candidate", str(runs["drop"]), "--tolerance", "0.5") == 0
    assert _regress("--baseline", str(runs["base"]), "--candidate", str(runs["drop"]), "--alpha", "1e-4") == 0


def test_mismatch_exits_2(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "mm.xml"
    # different doc sets: compared on the common docs (identical values there), and the output says so
    code = _regress("--baseline", str(runs["base"]), "--candidate", str(runs["mismatch"]), "--junit", str(junit))
    assert code == 0
    out = capsys.readouterr().out
    assert "doc sets differ" in out and "mmau_sound-clip007.wav" in out
    n_base = len(read_run(runs["base"]).tasks["mmau_sound"].doc_ids)
    assert f"compared on the {n_base - 1} paired docs of {n_base} baseline / {n_base - 1} candidate" in out
    assert "paired docs:" in out
    root = ET.parse(junit).getroot()
    assert [c.get("name") for c in root.iter("testcase") if c.find("error") is not None] == []
    # different task sets
    assert _regress("--baseline", str(runs["base"]), "--candidate", str(runs["nobase"])) == 2
    assert "tasks missing from candidate" in capsys.readouterr().out
    # unreadable input
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _regress("--baseline", str(empty), "--candidate", str(runs["base"]), "--junit", str(junit)) == 2
    assert "--log_samples" in capsys.readouterr().out
    assert ET.parse(junit).getroot().get("errors") == "1"


def test_compare_subcommand(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis import regress

    parser = argparse.ArgumentParser()
    regress.add_compare_arguments(parser)
    js = tmp_path / "cmp.json"
    args = parser.parse_args([str(runs["base"]), str(runs["drop"]), "--n-boot", "2000", "--json", str(js)])
    assert regress.compare_main(args) == 0
    data = json.loads(js.read_text())
    row = next(t for t in data["tasks"] if t["task"] == "sakura_gender")
    assert row["change"] == pytest.approx(-12 / N_DOCS)
    assert row["ci_low"] <= row["change"] <= row["ci_high"] < 0
    assert "sakura_gender" in capsys.readouterr().out
