"""Critical layers (AudioLens Eq. 3-4) and their correlation with accuracy (Table III), hand-computed."""

from __future__ import annotations

import math

import pytest

from analysis.critical import CriticalRow, contributions, correlation, critical_layer, parse_task, table_ii, table_iii


def test_critical_layer_hand_computed():
    # |Y| = 2, alpha = 0.2 -> threshold 0.6; layers 1..4 contribute 0, 0.1, 0.3, 0 (layer 0 is ignored)
    info = [0.99, 0.5, 0.7, 0.9, 0.6]
    assert list(contributions(info, 2)) == pytest.approx([0.0, 0.1, 0.3, 0.0])
    assert critical_layer(info, 2) == pytest.approx((0.1 * 2 + 0.3 * 3) / 0.4)  # 2.75
    # |Y| = 5, alpha = 0.5 -> threshold 0.3: contributions 0.1 (l=1), 0 (l=2), 0.5 (l=3)
    assert critical_layer([0.0, 0.4, 0.3, 0.8], 5, alpha=0.5) == pytest.approx((0.1 * 1 + 0.5 * 3) / 0.6)
    # nothing above the threshold -> NaN
    assert math.isnan(critical_layer([1.0, 0.5, 0.55, 0.6], 2))


def test_parse_task():
    assert parse_task("sakura_gender") == ("gender", "p3")
    assert parse_task("sakura_animal_p1") == ("animal", "p1")
    assert parse_task("sakura_language_multi") == ("language", "multi")
    assert parse_task("demo_emotion") == ("emotion", "p3")
    assert parse_task("mmau_sound") == ("mmau_sound", "")


def _row(track, prompt, acc, cl, model="m"):
    return CriticalRow(model, f"sakura_{track}_{prompt}", track, prompt, "last", acc, cl, 10, 2)


def test_correlation_hand_computed_and_exclusion():
    rows = [_row("gender", "p1", 0.9, 5.0), _row("emotion", "p1", 1.0, 1.0), _row("emotion", "p2", 2.0, 2.0),
            _row("animal", "p1", 4.0, 3.0), _row("animal", "p2", 0.5, math.nan)]
    # without gender, and without the NaN row: x = [1, 2, 3], y = [1, 2, 4]
    # mean x = 2, mean y = 7/3; Sxy = 3, Sxx = 2, Syy = 42/9 -> r = 3 / sqrt(2 * 42 / 9)
    r_hand = 3 / math.sqrt(2 * 42 / 9)
    # p for n = 3: t = r sqrt(1 / (1 - r^2)) with 1 dof -> p = 1 - 2 atan(|t|) / pi
    t = r_hand * math.sqrt(1 / (1 - r_hand ** 2))
    p_hand = 1 - 2 * math.atan(abs(t)) / math.pi
    res = correlation(rows, exclude_tracks=["Gender"])
    assert res["n"] == 3 and res["exclude_tracks"] == ["gender"]
    assert res["r"] == pytest.approx(r_hand, abs=1e-12)
    assert res["pvalue"] == pytest.approx(p_hand, abs=1e-9)
    full = correlation(rows)
    assert full["n"] == 4  # the NaN row is left out
    assert correlation(rows[:2])["r"] is None  # fewer than 3 rows
    t3 = table_iii(rows, "last", ["gender"])
    assert [e["n"] for e in t3] == [4, 3] and t3[1]["r"] == pytest.approx(r_hand)


def test_table_ii_averages_over_prompt_formats():
    rows = [_row("gender", "p1", 0.8, 2.0), _row("gender", "p2", 0.6, 4.0), _row("gender", "p3", 0.7, math.nan),
            _row("emotion", "p1", 0.3, 3.0)]
    t = {r["track"]: r for r in table_ii(rows)}
    assert t["gender"]["critical_layer"] == pytest.approx(3.0) and t["gender"]["n_formats"] == 2
    assert t["gender"]["accuracy"] == pytest.approx(0.7)
    assert t["emotion"]["critical_layer"] == pytest.approx(3.0)
    assert _row("x", "p1", 0.1, math.nan).as_dict()["critical_layer"] is None
