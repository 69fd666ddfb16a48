"""analysis.stats and analysis.atomic against independent computations."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from analysis import stats
from analysis.atomic import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl

# ---------------------------------------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------------------------------------


def test_mcnemar_exact_matches_binomial() -> None:
    a = [1] * 20 + [0] * 5 + [1] * 3 + [0] * 2  # 20 both right, 5 a-wrong/b-right, 3 a-right/b-wrong, 2 both wrong
    b = [1] * 20 + [1] * 5 + [0] * 3 + [0] * 2
    res = stats.mcnemar_exact(a, b)
    assert (res["b01"], res["b10"]) == (5, 3)
    assert res["pvalue"] == pytest.approx(binomtest(3, 8, 0.5).pvalue)
    assert stats.mcnemar_exact([1, 0, 1], [1, 0, 1]) == {"b01": 0, "b10": 0, "statistic": 0.0, "pvalue": 1.0}
    assert stats.mcnemar_exact([True] * 12, [False] * 12)["pvalue"] == pytest.approx(2 * 0.5**12)
    with pytest.raises(ValueError):
        stats.mcnemar_exact([1, 0], [1])
    with pytest.raises(ValueError):
        stats.mcnemar_exact([0.5, 1], [1, 1])


def test_wilson_by_hand() -> None:
    k, n, z = 37, 50, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.wilson_ci(k, n) == pytest.approx((centre - half, centre + half))
    lo, hi = stats.wilson_ci(0, 10)
    assert lo == 0.0 and 0 < hi < 0.35
    assert all(math.isnan(x) for x in stats.wilson_ci(0, 0))


def test_holm_by_hand() -> None:
    ps = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert stats.holm(ps) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.01, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert stats.holm([]) == []


def test_bootstrap_intervals() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random(400) < 0.6).astype(float)
    ci = stats.bootstrap_ci(x, n_boot=4000, seed=3)
    assert ci.estimate == pytest.approx(x.mean())
    assert ci.low < x.mean() < ci.high
    se = math.sqrt(x.mean() * (1 - x.mean()) / x.size)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert stats.bootstrap_ci(x, n_boot=4000, seed=3) == ci  # seeded -> reproducible
    assert stats.bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)
    y = x.copy()
    y[:40] = 1.0  # candidate better on some docs
    d = stats.bootstrap_diff_ci(x, y, n_boot=4000)
    assert d.estimate == pytest.approx(y.mean() - x.mean())
    assert 0 < d.low <= d.estimate <= d.high
    assert stats.bootstrap_diff_ci(x, x) == (0.0, 0.0, 0.0)


def test_correlations_and_ranks() -> None:
    x = [0, 0, 0, 1, 1, 1]
    y = [1.0, 2.0, 1.5, 3.0, 4.0, 3.5]
    r = stats.point_biserial(x, y)
    assert not r.degenerate and r.r == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert stats.point_biserial([1, 1, 1, 1], y[:4]) == (0.0, 1.0, True)
    rr, p = stats.pearson(y, [2 * v + 1 for v in y])
    assert rr == pytest.approx(1.0) and p < 1e-3
    assert all(math.isnan(v) for v in stats.pearson([1, 1, 1], [1, 2, 3]))
    assert stats.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert stats.roc_auc([1, 2, 2, 3], [0, 1, 0, 1]) == pytest.approx(0.875)  # ties count 1/2
    assert math.isnan(stats.roc_auc([1, 2], [1, 1]))
    mw = stats.mannwhitney([3, 4, 5], [1, 2, 3])
    assert mw.auc == pytest.approx(8.5 / 9) and 0 < mw.pvalue < 1


# ---------------------------------------------------------------------------------------------------------
# atomic helpers
# ---------------------------------------------------------------------------------------------------------


def test_atomic_writes(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "hello")
    assert p.read_text() == "hello"
    atomic_write_text(p, "world")
    assert p.read_text() == "world"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2], "y": "é"})
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8")) == {"x": [1, 2], "y": "é"}
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["a.txt", "b.bin", "c.json", "sub"]  # no temp files left
    os.chmod(p, 0o640)
    atomic_write_text(p, "again")
    assert (p.stat().st_mode & 0o777) == 0o640  # replaces keep the file's permissions


def test_atomic_write_failure_leaves_old_file(tmp_path: Path) -> None:
    p = tmp_path / "keep.json"
    atomic_write_json(p, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert json.loads(p.read_text()) == {"ok": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["keep.json"]


def test_jsonl_resume_after_truncation(tmp_path: Path) -> None:
    p = tmp_path / "records.jsonl"
    assert read_jsonl(p) == []
    for i in range(3):
        append_jsonl(p, {"doc_id": f"d{i}", "acc": i % 2})
    with open(p, "ab") as fh:  # a run killed in the middle of a write
        fh.write(b'{"doc_id": "d3", "ac')
    assert [r["doc_id"] for r in read_jsonl(p)] == ["d0", "d1", "d2"]
    append_jsonl(p, {"doc_id": "d3", "acc": 1})  # resuming drops the fragment first
    assert [r["doc_id"] for r in read_jsonl(p)] == ["d0", "d1", "d2", "d3"]
    assert p.read_text().count("\n") == 4
    # a complete record missing only its newline is kept
    with open(p, "ab") as fh:
        fh.write(b'{"doc_id": "d4"}')
    assert read_jsonl(p)[-1] == {"doc_id": "d4"}
    append_jsonl(p, {"doc_id": "d5"})
    assert [r["doc_id"] for r in read_jsonl(p)][-2:] == ["d4", "d5"]
    # corruption in the middle is an error, not silently skipped
    lines = p.read_text().splitlines()
    lines[1] = "{broken"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(p)
