"""Small seams of the architecture: package version, intervention keys, leaderboard interval alpha, typed
spec fields, the Intervention protocol, explicit task metadata."""

from __future__ import annotations

import json
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest


def test_package_version_is_the_installed_distributions():
    import audio_tasks
    from analysis.commands.common import package_version

    assert audio_tasks.__version__ == version("audio-lalm-lab") == package_version()
    assert audio_tasks.__version__ != "0"


def test_non_intervention_keys_follow_the_model_arguments():
    from analysis.results_io import NON_INTERVENTION_KEYS, split_model_args
    from audio_tasks.model import MODEL_ARGS
    from interventions.config import STEER_KEYS

    assert set(MODEL_ARGS) - set(STEER_KEYS) <= NON_INTERVENTION_KEYS
    assert not set(STEER_KEYS) & NON_INTERVENTION_KEYS
    _, config = split_model_args({"pretrained": "m", "share_prefix": "true", "max_gen_toks": "8", "steer": "head",
                                  "alpha": "2.0"})
    assert config == {"steer": "head", "alpha": "2.0"}


def _run(ks_ns) -> Any:
    tasks = {f"t{i}": SimpleNamespace(n=n, has=lambda m: m == "acc",
                                      values=lambda m="acc", k=k, n=n: np.array([1.0] * k + [0.0] * (n - k)))
             for i, (k, n) in enumerate(ks_ns)}
    return SimpleNamespace(tasks=tasks)


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_leaderboard_interval_uses_its_alpha(alpha):
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint

    from analysis.leaderboard import Column, _stats

    got = _stats(_run([(30, 40)]), Column("t0", ("t0",), "task"), "acc", alpha)
    assert got is not None
    cell = got[0]
    assert (cell.low, cell.high) == pytest.approx(proportion_confint(30, 40, alpha=alpha, method="wilson"))
    # Unequal task sizes: a normal interval around the unweighted mean, z from alpha.
    got = _stats(_run([(30, 40), (10, 20)]), Column("avg", ("t0", "t1"), "mean"), "acc", alpha)
    assert got is not None
    cell = got[0]
    accs, ns = np.array([0.75, 0.5]), np.array([40, 20])
    se = np.sqrt((accs * (1 - accs) / ns).sum()) / 2
    z = norm.ppf(1 - alpha / 2)
    assert (cell.low, cell.high) == pytest.approx((0.625 - z * se, 0.625 + z * se))


def test_arch_spec_typed_fields_and_unknown_extra_rejected():
    from interventions.specs import ArchSpec

    def spec(**kw: Any) -> ArchSpec:
        return ArchSpec(name="x", model_types=("x",), model_class="X", decoder="model", **kw)

    assert spec(audio_window_s=2.0).audio_window_s == 2.0
    assert spec(extra={"audio_window_s": 3.0}).audio_window_s == 3.0  # the old spelling still works
    with pytest.raises(ValueError, match=r"unknown extra key\(s\) \['window'\]; use the typed fields"):
        spec(extra={"window": 3.0})


def test_interventions_satisfy_the_protocol():
    from interventions import Intervention
    from interventions.steering import Enrich, HeadSteer, LayerGuided, NoIntervention, RandomEnrich

    for iv in (NoIntervention(), Enrich(1, 0.5), LayerGuided({1: 1.0}, 1.0), HeadSteer([(1, 0)], 1.0),
               RandomEnrich(0.5, 1, 0, 4)):
        assert isinstance(iv, Intervention)
    assert not isinstance(object(), Intervention)


def test_task_metadata_is_stamped_on_docs_and_read_back():
    import datasets

    from audio_tasks.data.registry import doc_metadata, stamp_metadata

    ds = stamp_metadata({"test": datasets.Dataset.from_list([{"doc_id": "a"}, {"doc_id": "b"}])},
                        {"split": "evaluation", "split_seed": 3, "data_root": "/d", "nested": {"no": 1}})
    doc = ds["test"][1]
    assert json.loads(doc["task_metadata"]) == {"split_seed": 3, "data_root": "/d"}
    assert doc_metadata(doc) == {"split_seed": 3, "data_root": "/d"} and doc_metadata({"x": 1}) == {}
