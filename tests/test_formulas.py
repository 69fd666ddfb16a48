"""interventions.formulas: one home per equation; the calibration sweep equals forward-pass steering."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from interventions.calibrate import collect, sweep_final_layer
from interventions.scoring import MCItem, score_items
from interventions.steering import LayerGuided
from tests.helpers import make_waves

REPO = Path(__file__).resolve().parent.parent
USER = "What is the gender of the speaker in the speech? Possible options: male, female."
PREFIX = "The speaker's gender is"


def test_layer_guided_sweep_equals_forward_steering_at_each_strength(tiny_lm):
    e = tiny_lm.engine
    prompt = e.render_chat(USER, assistant_prefix=PREFIX)
    conts = [e.encode_text(" male"), e.encode_text(" female")]
    waves = make_waves(6, seed=11)
    items = [MCItem(e.tokenize(prompt, [w]), conts, {"gold": int(i >= 4)}) for i, w in enumerate(waves)]
    data = collect(e, items, batch_size=3, attention=False, heads=False)
    L = e.num_layers
    weights = {1: 0.5, L: 0.5}
    alphas = [-8.0, -1.0, -0.5, 0.0, 2.0, 32.0]
    sweep = sweep_final_layer(e, data, weights, alphas)
    forward = {}
    for a in alphas:
        scores = score_items(e, items, LayerGuided(weights=weights, alpha=a))
        forward[a] = float(np.mean([int(np.argmax(s.first)) == it.meta["gold"] for s, it in zip(scores, items)]))
    assert sweep == forward
    assert len(set(forward.values())) > 1  # the strengths actually change the predictions


def test_formulas_against_hand_computed_values():
    from interventions import formulas as f

    # AudioLens Eq. 2 on a 3-item, 2-layer, 2-choice table.
    logp = np.array([[[0, -1], [-1, 0]], [[0, -1], [0, -1]], [[-1, 0], [-1, 0]]], dtype=float)
    assert list(f.information_score(logp, np.array([1, 0, 1]))) == pytest.approx([2 / 3, 1.0])
    # Steering Eqs. 4-6
    assert f.layer_weights([(2, 0), (2, 3), (5, 1), (2, 1)]) == {2: 0.75, 5: 0.25}
    a = {1: torch.tensor([[1.0, 2.0]]), 2: torch.tensor([[3.0, 0.0]])}
    s = {1: torch.tensor([[0.0, 1.0]]), 2: torch.tensor([[1.0, 1.0]])}
    d = f.layer_guided_direction({1: 0.25, 2: 0.75}, a, s)
    assert d.tolist() == [[0.25 + 1.5, 0.25 - 0.75]]
    assert f.final_layer_steering(torch.tensor([[1.0, 1.0]]), d, 2.0).tolist() == [[4.5, 0.0]]
    # Steering Eqs. 7-9: two heads of dimension 1 in a 2-d model, W_O = [[1, 2], [3, 4]].
    W = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    aud, sil = torch.tensor([[[1.0], [2.0]]]), torch.tensor([[[0.0], [1.0]]])
    assert f.head_steering_update(aud, sil, W, [0, 1], 1, 0.5).tolist() == [[0.5 * (1 + 2), 0.5 * (3 + 4)]]
    # Steering Eq. 1: attention mass on audio keys.
    att = torch.tensor([[[0.1, 0.6, 0.3]]])
    assert f.audio_attention_mass(att, torch.tensor([[False, True, True]])).tolist() == [[pytest.approx(0.9)]]
    assert f.recovery_rate(0.5, 0.9, 0.1) == pytest.approx(0.5)


EQUATIONS = ["AudioLens Eq. 2", "AudioLens Eq. 3", "AudioLens Eq. 4", "AudioLens Eq. 5"] + [
    f"Steering Eq. {n}" for n in range(1, 10)]


@pytest.mark.parametrize("eq", EQUATIONS)
def test_each_equation_has_one_home(eq):
    """``grep -rn "Eq. N"`` over the code finds the equation exactly once, in interventions/formulas.py."""
    num = eq.split()[-1]
    hits = []
    for p in sorted(REPO.glob("*/**/*.py")):
        if p.parts[len(REPO.parts)] in ("tests", "build") or ".git" in p.parts:
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(rf"Eq\. {num}(?!\d)", line):
                hits.append((p.relative_to(REPO).as_posix(), line.strip()))
    mine = [h for h in hits if eq in h[1]]
    assert [h[0] for h in mine] == ["interventions/formulas.py"], hits
    assert all(h[0] == "interventions/formulas.py" for h in hits), hits
