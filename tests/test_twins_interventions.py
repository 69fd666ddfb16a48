"""The hand-reference tests of interventions, logit lens and causal tracing, re-run on the three
real-vocabulary twins (tests/test_twins.py) by overriding the ``tiny_lm`` fixture those tests use:
``enrich``, ``layer_guided`` and ``head`` steering equal references computed by hand from the model's own
forward within 1e-5, the lens equals the full model's hidden states, patched tracing runs equal the full
model, on the real vocabularies, chat templates, processors and GQA layouts."""

from __future__ import annotations

import pytest

from tests.test_lens import setup, test_lens_matches_full_model_hidden_states  # noqa: F401
from tests.test_steering import (  # noqa: F401 - collected here with this module's tiny_lm
    score,
    test_enrich_matches_hand_reference_and_touches_only_target,
    test_head_steering_matches_hand_reference,
    test_layer_guided_matches_hand_reference,
)
from tests.test_tracing import test_patched_runs_match_full_model_reference, traced  # noqa: F401
from tests.test_twins import ARCHS, twin_dirs, twin_lm, twin_load_dirs  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module", params=ARCHS)
def tiny_lm(request, twin_load_dirs):  # noqa: F811 - overrides tests/conftest.py's tiny model
    return twin_lm(twin_load_dirs, request.param, 4)
