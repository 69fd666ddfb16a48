"""interventions.config: model-argument strings parse to the expected typed values; bad input gets an error naming
the argument and the valid choices, before any model is loaded (no model is loaded here)."""

from __future__ import annotations

import re

import pytest

from interventions.config import STEER_KINDS, SteerConfig, parse_heads, parse_int_list


def test_defaults_without_arguments():
    c = SteerConfig.from_kwargs({})
    assert (c.steer, c.alpha, c.source_layer, c.gap, c.K, c.layers, c.heads, c.calibration, c.control, c.seed) == \
        ("none", None, None, 5, 20, None, None, None, None, 0)
    assert c.alphas == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert c.explicit  # nothing to calibrate without an intervention
    assert c.fingerprint() == {"steer": "none", "gap": 5, "K": 20, "seed": 0,
                               "alphas": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]}


def test_model_args_strings_become_typed_values():
    """The values arrive as strings from ``--model_args k=v,...``."""
    c = SteerConfig.from_kwargs({"steer": " Layer_Guided ", "alpha": "2.5", "K": "8", "gap": "3", "seed": "7",
                                 "layers": "[1, 3]", "heads": "1:0;3:2", "control": "Random",
                                 "alphas": "0;0.5|1 2", "calibration": "/tmp/cal"})
    assert c.steer == "layer_guided"
    assert c.alpha == 2.5 and isinstance(c.alpha, float)
    assert (c.K, c.gap, c.seed) == (8, 3, 7) and all(type(v) is int for v in (c.K, c.gap, c.seed))
    assert c.layers == [1, 3]
    assert c.heads == [(1, 0), (3, 2)]
    assert c.control == "random"
    assert c.alphas == [0.0, 0.5, 1.0, 2.0]
    assert c.calibration == "/tmp/cal"
    fp = c.fingerprint()
    assert "k_given" not in fp and "gap_given" not in fp
    assert fp["heads"] == [(1, 0), (3, 2)] and fp["alpha"] == 2.5 and fp["K"] == 8
    assert "source_layer" not in fp  # None values are left out of the fingerprint


def test_lam_is_an_alias_of_alpha_and_lowercase_k_of_K():
    assert SteerConfig.from_kwargs({"steer": "enrich", "lam": "0.75"}).alpha == 0.75
    assert SteerConfig.from_kwargs({"steer": "head", "k": 4}).K == 4
    with pytest.raises(ValueError, match="either alpha or lam"):
        SteerConfig.from_kwargs({"steer": "enrich", "alpha": "1", "lam": "1"})


@pytest.mark.parametrize("v,expected", [
    ("[10,12]", [10, 12]), ("10;12", [10, 12]), ("10 12", [10, 12]), ("10|12", [10, 12]), (7, [7]),
    ([3, 4.0], [3, 4]), ("(2, 5)", [2, 5]), ("8", [8]),
])
def test_parse_int_list_forms(v, expected):
    assert parse_int_list(v, "layers") == expected


@pytest.mark.parametrize("v,expected", [
    ("10:3;12:1", [(10, 3), (12, 1)]), ("10.3 12.1", [(10, 3), (12, 1)]), ("[[10,3],[12,1]]", [(10, 3), (12, 1)]),
    ([(2, 0)], [(2, 0)]),
])
def test_parse_heads_forms(v, expected):
    assert parse_heads(v) == expected


@pytest.mark.parametrize("call,msg", [
    (lambda: parse_int_list("1;x", "layers"), "layers: expected a list of integers like [10,12] or 10;12, got"),
    (lambda: parse_int_list("[1,", "layers"), "cannot parse '[1,'"),
    (lambda: parse_heads("10-3"), "heads: expected LAYER:HEAD pairs like 10:3;12:1 or [[10,3],[12,1]], got '10-3'"),
    (lambda: parse_heads([[1, 2, 3]]), "heads: expected pairs like [[10,3],[12,1]]"),
])
def test_list_parsers_name_the_argument(call, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        call()


def test_unknown_steer_lists_the_valid_kinds():
    with pytest.raises(ValueError) as e:
        SteerConfig.from_kwargs({"steer": "caa"})
    msg = str(e.value)
    assert "steer='caa'" in msg
    assert all(k in msg for k in STEER_KINDS)
    assert set(STEER_KINDS) == {"none", "enrich", "layer_guided", "single_layer", "head"}


@pytest.mark.parametrize("kw,msg", [
    ({"steer": "head", "control": "shuffled"}, "control='shuffled'; valid: random, none"),
    ({"steer": "enrich", "alpha": "nan"}, "alpha must be finite"),
    ({"steer": "enrich", "lam": "big"}, "lam must be a number, got 'big'"),
    ({"steer": "head", "K": "0"}, "K must be >= 1, got 0"),
    ({"steer": "head", "k": "x"}, "k must be an integer, got 'x'"),
    ({"steer": "head", "K": True}, "K must be an integer, got True"),
    ({"steer": "enrich", "gap": "-1"}, "gap must be >= 0, got -1"),
    ({"steer": "layer_guided", "alphas": "0;inf"}, "alphas: strengths must be finite"),
])
def test_bad_values_name_the_argument_and_choices(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        SteerConfig.from_kwargs(kw)


def test_steer_none_refuses_ignored_arguments_and_names_the_kinds():
    with pytest.raises(ValueError) as e:
        SteerConfig.from_kwargs({"steer": "none", "alpha": "1", "layers": "2"})
    msg = str(e.value)
    assert "alpha, layers given but steer=none" in msg
    assert "steer=enrich|layer_guided|single_layer|head" in msg
    assert SteerConfig.from_kwargs({"steer": "none", "calibration": ""}).calibration is None  # empty: not "given"
    c = SteerConfig.from_kwargs({"K": "3", "alphas": "0;1"}, calibrating=True)
    assert (c.K, c.alphas) == (3, [0.0, 1.0])


@pytest.mark.parametrize("kw,msg", [
    ({"steer": "layer_guided", "layers": "0;2"}, "layers [0] out of range: valid layers are 1..4"),
    ({"steer": "layer_guided", "layers": "[4,5]"}, "layers [5] out of range: valid layers are 1..4"),
    ({"steer": "head", "heads": "1:4"}, "heads [(1, 4)] out of range: valid heads are (1..4, 0..3)"),
    ({"steer": "head", "heads": "5:0"}, "heads [(5, 0)] out of range"),
    ({"steer": "enrich", "source_layer": "3", "gap": "2"},
     "source_layer 3 out of range: with gap 2 it must be in 1..2"),
    ({"steer": "enrich"}, "gap 5 too large for a model with 4 layers"),
    ({"steer": "enrich", "gap": "9", "calibration": "/cal"}, "gap 9 too large"),  # a given gap is checked
    ({"steer": "enrich", "gap": "4"}, "gap 4 too large for a model with 4 layers"),
    ({"steer": "layer_guided", "K": "17"}, "K=17 exceeds the number of heads (16)"),
])
def test_validate_against_the_model_size(kw, msg):
    c = SteerConfig.from_kwargs(kw)
    with pytest.raises(ValueError, match=re.escape(msg)):
        c.validate_against(4, 4)


@pytest.mark.parametrize("kw", [
    {"steer": "layer_guided", "layers": "1;4", "K": "16"},
    {"steer": "head", "heads": "4:3;1:0"},
    {"steer": "enrich", "source_layer": "2", "gap": "2"},
    {"steer": "enrich", "gap": "3"},
    {"steer": "enrich", "calibration": "/cal"},  # no gap given: the artifact's own gap is used, not the default 5
    {"steer": "head"},  # default K=20 > 16 heads is clamped later, not refused
])
def test_validate_against_accepts_the_edges(kw):
    SteerConfig.from_kwargs(kw).validate_against(4, 4)


@pytest.mark.parametrize("kw,explicit", [
    ({"steer": "enrich", "alpha": "1", "source_layer": "2"}, True),
    ({"steer": "enrich", "alpha": "1"}, False),  # no source layer: calibration needed
    ({"steer": "enrich", "source_layer": "2"}, False),  # no strength
    ({"steer": "enrich", "alpha": "1", "control": "random"}, True),
    ({"steer": "layer_guided", "alpha": "1", "layers": "2"}, True),
    ({"steer": "layer_guided", "alpha": "1", "heads": "2:1"}, True),
    ({"steer": "layer_guided", "alpha": "1"}, False),
    ({"steer": "head", "alpha": "1", "heads": "2:1"}, True),
    ({"steer": "head", "alpha": "1", "layers": "2"}, False),  # layers do not select heads
    ({"steer": "single_layer", "alpha": "1", "layers": "2"}, True),
    ({"steer": "single_layer", "alpha": "1", "layers": "2;3"}, False),
])
def test_explicit_means_no_calibration_needed(kw, explicit):
    assert SteerConfig.from_kwargs(kw).explicit is explicit
