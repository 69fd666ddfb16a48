"""Audio-specialist heads (analysis/heads.py): attention mass vs the full model's attentions, correlations vs
scipy, listening score, AUC against random heads, flip test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from analysis import heads
from interventions.calibrate import collect, point_biserial_matrix
from interventions.scoring import MCItem

USER = "What is the gender of the speaker in the speech? Possible options: male, female."



def _items(lm, n=3):
    eng = lm.engine
    prompt = eng.render_chat(USER, assistant_prefix="The speaker's gender is")
    rng = np.random.default_rng(5)
    waves = [(0.1 * rng.standard_normal(int(16000 * (0.5 + 0.4 * i)))).astype(np.float32) for i in range(n)]
    conts = [eng.encode_text(" male"), eng.encode_text(" female")]
    return waves, [MCItem(eng.tokenize(prompt, [w]), conts, {"gold": i % 2, "prompt": prompt})
                   for i, w in enumerate(waves)]


def test_attention_mass_matches_full_model_attentions(tiny_lm):
    lm = tiny_lm
    waves, items = _items(lm)
    data = collect(lm.engine, items, batch_size=3, attention=True, silence=True, heads=False)
    model = lm.model
    old = lm.spec.text_cfg(model)._attn_implementation
    model.set_attn_implementation("eager")
    try:
        for i, (w, it) in enumerate(zip(waves, items)):
            inp = lm.processor(text=[it.meta["prompt"]], audio=[w], sampling_rate=16000, return_tensors="pt")
            audio = inp["input_ids"][0] == model.config.audio_token_id
            with torch.no_grad():
                out = model(**inp, output_attentions=True)
            ref = torch.stack([a[0, :, -1, audio].sum(-1) for a in out.attentions]).double().numpy()  # (L, H)
            np.testing.assert_allclose(data.attn_mass[i].double().numpy(), ref, atol=1e-5, rtol=0)
            # silence run: first-token log-probs of the full model on zeros of the same duration
            inp_s = lm.processor(text=[it.meta["prompt"]], audio=[np.zeros_like(w)], sampling_rate=16000,
                                 return_tensors="pt")
            with torch.no_grad():
                lp = torch.log_softmax(model(**inp_s).logits[0, -1].float(), -1)
            ids = [c[0] for c in it.continuations]
            np.testing.assert_allclose(data.silence_logp[i].numpy(), lp[ids].numpy(), atol=1e-5)
    finally:
        model.set_attn_implementation({lm.spec.text_config: old})
    recs = heads.records_from_collect(data, items)
    assert recs[0]["flip"] == (recs[0]["pred"] != recs[0]["pred_silence"])
    assert np.asarray(recs[1]["mass"]).shape == (lm.engine.num_layers, lm.spec.num_heads(model))


def test_point_biserial_matches_scipy():
    rng = np.random.default_rng(0)
    N, L, H = 40, 3, 4
    mass = rng.random((N, L, H))
    correct = rng.random(N) < 0.4
    mass[:, 1, 2] += 0.8 * correct  # one informative head
    mass[:, 0, 0] = 0.3  # a constant head -> r = 0
    r = point_biserial_matrix(torch.tensor(mass), torch.tensor(correct)).double().numpy()
    for l in range(L):
        for h in range(H):
            if l == 0 and h == 0:
                assert abs(r[l, h]) < 1e-9  # constant mass: r = 0 (up to rounding of the mean)
                continue
            ref = stats.pointbiserialr(correct.astype(float), mass[:, l, h]).statistic
            assert r[l, h] == pytest.approx(ref, abs=1e-6)
    np.testing.assert_allclose(heads.head_correlations(mass, correct), r, atol=1e-7)


def test_listening_score_auc_and_flip_test():
    mass = np.zeros((4, 2, 2))
    mass[:, 0, 1] = [0.1, 0.4, 0.35, 0.8]
    mass[:, 1, 0] = [1.0, 0.0, 0.0, 1.0]
    r = np.array([[0.0, 0.5], [-2.0, 0.0]])
    s = heads.listening_score(mass, r, [(1, 1), (2, 0)])
    np.testing.assert_allclose(s, 0.5 * mass[:, 0, 1] - 2.0 * mass[:, 1, 0])
    assert heads.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert np.isnan(heads.roc_auc([0.1, 0.2], [1, 1]))
    x = np.array([0.3, 0.9, 0.8, 0.1, 0.2, 0.75, 0.4])
    flip = np.array([0, 1, 1, 0, 0, 1, 0], bool)
    ft = heads.flip_test(x, flip)
    ref = stats.mannwhitneyu(x[flip], x[~flip], alternative="two-sided")
    assert ft["U"] == pytest.approx(ref.statistic) and ft["p_two_sided"] == pytest.approx(ref.pvalue)
    assert ft["p_greater"] == pytest.approx(stats.mannwhitneyu(x[flip], x[~flip], alternative="greater").pvalue)
    assert ft["auc"] == 1.0 and ft["n_flip"] == 3


def test_heads_summary_selects_by_calibration_and_scores_evaluation():
    L, H, N = 3, 4, 30

    def recs(n, seed):
        g = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            c = bool(g.random() < 0.5)
            m = g.random((L, H)) * 0.2
            m[2, 1] += 0.6 * c  # specialist: more audio mass when correct
            m[0, 3] += 0.3 * (not c)  # negatively associated head
            out.append({"mass": m.tolist(), "correct": c, "flip": bool(c and g.random() < 0.7)})
        return out

    cal, ev = recs(N, 2), recs(N, 3)
    sm = heads.heads_summary(cal, ev, K=2, n_random=5)
    top = [(s["layer"], s["head"]) for s in sm["specialists"]]
    assert top[0] == (3, 1) and (1, 3) in top and sm["specialists"][1]["r"] < 0
    r = np.asarray(sm["r"])
    mass_e = np.asarray([x["mass"] for x in ev])
    corr_e = np.asarray([x["correct"] for x in ev])
    score = heads.listening_score(mass_e, r, top)
    e = sm["evaluation"]
    assert e["auc"] == pytest.approx(heads.roc_auc(score, corr_e)) and e["auc"] > 0.9
    rand = heads.random_head_aucs(mass_e, r, corr_e, 2, 5)
    assert e["random_auc"]["values"] == pytest.approx(rand)
    assert e["random_auc"]["mean"] == pytest.approx(np.mean(rand))
    assert e["random_auc"]["std"] == pytest.approx(np.std(rand, ddof=1))
    assert e["flip_test"]["p_greater"] < 0.05
    assert len(sm["evaluation_scores"]) == N
