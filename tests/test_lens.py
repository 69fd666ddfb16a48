"""Logit lens (analysis/lens.py) against independent references computed from the full model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import lens
from interventions.scoring import MCItem, score_items

USER = "What is the gender of the speaker in the speech? Possible options: male, female."
PREFIX = "The speaker's gender is"



def _waves(n: int, seed: int = 0, sr: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(sr * (0.6 + 0.3 * i)))).astype(np.float32) for i in range(n)]


def _items(lm, waves, user=USER, prefix=PREFIX):
    eng = lm.engine
    prompt = eng.render_chat(user, assistant_prefix=prefix)
    conts = [eng.encode_text(" male"), eng.encode_text(" female")]
    return [MCItem(eng.tokenize(prompt, [w]), conts,
                   {"gold": i % 2, "prompt": prompt, "choices": ["male", "female"], "assistant_prefix": prefix,
                    "task": "t", "doc_id": i})
            for i, w in enumerate(waves)]


@pytest.fixture(scope="module")
def setup(tiny_lm):
    waves = _waves(6)
    items = _items(tiny_lm, waves)
    res = lens.lens_batch(tiny_lm.engine, items)  # one batch, mixed lengths (left padding)
    return tiny_lm, waves, items, res


def _inputs(lm, prompt, wave):
    return lm.processor(text=[prompt], audio=[wave], sampling_rate=16000, return_tensors="pt")


@torch.no_grad()
def _reference_lens(lm, hidden_states, pos: int, ids) -> np.ndarray:
    """(L+1, C) log-probs: norm + lm_head applied by hand, except on the last (already normed) entry."""
    model = lm.model
    norm, head = model.model.language_model.norm, model.lm_head
    L = len(hidden_states) - 1
    rows = []
    for l, h in enumerate(hidden_states):
        x = h[0, pos]
        logits = head(x if l == L else norm(x)).float()
        rows.append(torch.log_softmax(logits, -1)[ids].double().numpy())
    return np.stack(rows)


def test_lens_matches_full_model_hidden_states(setup):
    lm, waves, items, res = setup
    logps, golds = [], []
    for it, w, r in zip(items, waves, res):
        ids = [c[0] for c in it.continuations]
        with torch.no_grad():
            out = lm.model(**_inputs(lm, it.meta["prompt"], w), output_hidden_states=True)
        for name, pos in (("last", -1), ("penultimate", -2)):
            ref = _reference_lens(lm, out.hidden_states, pos, ids)
            np.testing.assert_allclose(r.logp[name], ref, atol=1e-5, rtol=0)
        # the last layer's lens is the model's own next-token distribution
        own = torch.log_softmax(out.logits[0, -1].float(), -1)[ids].double().numpy()
        np.testing.assert_allclose(r.logp["last"][-1], own, atol=1e-5, rtol=0)
        logps.append({"last": _reference_lens(lm, out.hidden_states, -1, ids)})
        golds.append(it.meta["gold"])
    # every I^l equals the information score of the independent reference
    ref_tab = lens.lens_table(logps, golds)
    tab = lens.lens_table([r.logp for r in res], golds)
    ref_I = np.array([[np.argmax(lp["last"][l]) == g for l in range(len(lp["last"]))]
                      for lp, g in zip(logps, golds)]).mean(0)
    np.testing.assert_allclose(tab.info["last"], ref_I, atol=1e-12)
    np.testing.assert_allclose(ref_tab.info["last"], ref_I, atol=1e-12)
    assert res[0].tokens["last"] == " is" and res[0].tokens["penultimate"] == " gender"


def test_info_at_last_layer_is_first_token_accuracy(setup):
    lm, _, items, res = setup
    scores = score_items(lm.engine, items)
    acc = np.mean([int(np.argmax(s.first)) == it.meta["gold"] for s, it in zip(scores, items)])
    tab = lens.lens_table([r.logp for r in res], [it.meta["gold"] for it in items])
    assert tab.info["last"][-1] == pytest.approx(acc, abs=1e-12)
    assert tab.accuracy == pytest.approx(acc, abs=1e-12)
    assert 0 < tab.n_correct < len(items)  # both subsets are exercised
    # the correct subset is right at the last layer by construction, the incorrect one never
    assert tab.info_correct["last"][-1] == 1.0 and tab.info_incorrect["last"][-1] == 0.0


def test_masked_last_matches_reference_with_4d_mask(setup):
    lm, waves, items, res = setup
    model = lm.model
    old = lm.spec.text_cfg(model)._attn_implementation
    model.set_attn_implementation("eager")
    try:
        for it, w, r in zip(items, waves, res):
            ids = [c[0] for c in it.continuations]
            inp = _inputs(lm, it.meta["prompt"], w)
            T = inp["input_ids"].shape[1]
            audio = inp["input_ids"][0] == model.config.audio_token_id
            allowed = torch.ones(T, T, dtype=torch.bool).tril()
            allowed[T - 1, audio] = False
            mask = torch.zeros(1, 1, T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)
            inp["attention_mask"] = mask
            with torch.no_grad():
                out = model(**inp, output_hidden_states=True)
            ref = _reference_lens(lm, out.hidden_states, -1, ids)
            np.testing.assert_allclose(r.logp["masked_last"], ref, atol=1e-5, rtol=0)
            assert not np.allclose(r.logp["masked_last"][1:], r.logp["last"][1:], atol=1e-6)
            # layer 0 (embeddings) is unaffected by attention masking
            np.testing.assert_allclose(r.logp["masked_last"][0], r.logp["last"][0], atol=1e-6)
    finally:
        model.set_attn_implementation({lm.spec.text_config: old})


def test_lens_table_hand_made():
    # 3 items, 2 layers (0..1), 2 labels
    lp = [np.log(np.array([[0.6, 0.4], [0.3, 0.7]])),  # gold 1: right at layer 1
          np.log(np.array([[0.2, 0.8], [0.9, 0.1]])),  # gold 1: wrong at layer 1
          np.log(np.array([[0.5, 0.1], [0.8, 0.2]]))]  # gold 0: right at layer 1
    tab = lens.lens_table([{"last": a} for a in lp], [1, 1, 0])
    assert tab.info["last"] == pytest.approx([2 / 3, 2 / 3])
    assert tab.accuracy == pytest.approx(2 / 3) and tab.n_correct == 2
    assert tab.info_correct["last"] == pytest.approx([0.5, 1.0])
    assert tab.info_incorrect["last"] == pytest.approx([1.0, 0.0])
    assert np.isnan(lens.info_score(np.zeros((0, 2, 2)), np.zeros(0)))[0]
    d = tab.as_dict()
    assert d["n_labels"] == 2 and d["info"]["last"] == pytest.approx([2 / 3, 2 / 3])
