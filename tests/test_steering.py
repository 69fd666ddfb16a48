"""Interventions: exactness against references computed by hand from raw captured states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interventions.scoring import MCItem, score_items
from interventions.steering import Enrich, HeadSteer, LayerGuided, NoIntervention, layer_weights
from tests.helpers import make_waves

USER = "What is the gender of the speaker in the speech? Possible options: male, female."
PREFIX = "The speaker's gender is"


def _items(lm, waves):
    e = lm.engine
    prompt = e.render_chat(USER, assistant_prefix=PREFIX)
    conts = [e.encode_text(" male"), e.encode_text(" female")]
    return [MCItem(e.tokenize(prompt, [w]), conts, {"gold": 0}) for w in waves], prompt


def _full_forward(lm, prompt, wave, hook_layer=None, hook=None, o_proj_hook=None):
    """Independent reference: the model's own forward (its own embedding/merge path)."""
    inp = lm.processor(text=[prompt], audio=[wave], sampling_rate=16000, return_tensors="pt")
    layers = lm.model.model.language_model.layers
    handles, cap = [], {}
    for l, layer in enumerate(layers, 1):
        handles.append(layer.register_forward_hook(
            lambda m, i, o, l=l: cap.__setitem__(l, (o[0] if isinstance(o, tuple) else o).detach().clone())))
    heads_in = {}
    for l, layer in enumerate(layers, 1):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a, l=l: heads_in.__setitem__(l, a[0][0, -1].detach().clone())))
    if hook is not None:
        handles.append(layers[hook_layer - 1].register_forward_hook(hook))
    if o_proj_hook is not None:
        l, fn = o_proj_hook
        handles.append(layers[l - 1].self_attn.o_proj.register_forward_hook(fn))
    try:
        with torch.no_grad():
            out = lm.model(**inp, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return out, cap, heads_in


@pytest.fixture(params=[False, True], ids=["full", "shared_prefix"])
def score(request, tiny_lm):
    """score_items with the full prompt, or with the audio prefix from the prefix KV cache (run
    twice: the first call computes the prefix, the second reuses it; both must agree)."""
    share = request.param

    def run(items, iv=None):
        if not share:
            return score_items(tiny_lm.engine, items, iv)
        tiny_lm.engine.clear_caches()
        first = score_items(tiny_lm.engine, items, iv, share_prefix=True)
        hits = tiny_lm.engine.prefix_hits
        again = score_items(tiny_lm.engine, items, iv, share_prefix=True)
        assert tiny_lm.engine.prefix_hits == hits + len(items)
        for a, b in zip(first, again):
            assert np.allclose(a.loglik, b.loglik, atol=1e-5)
        return again

    return run


def _logp_first(lm, logits_last, ids):
    return torch.log_softmax(logits_last.float(), -1)[ids]


class _NoopSplit(NoIntervention):
    unsteered_aux_pass = True  # takes head steering's path (context once, last position per pass), no hooks


def test_strength_zero_reproduces_unsteered(tiny_lm):
    """Strength 0 is bit-identical to the unsteered scores computed the same way: the plain one-pass path
    for enrich / layer_guided, and for head steering the path that runs the last prompt position on the
    KV cache of the rest (which itself equals the one-pass scores within float32 reordering)."""
    items, _ = _items(tiny_lm, make_waves(3))
    base = score_items(tiny_lm.engine, items)
    split = score_items(tiny_lm.engine, items, _NoopSplit(name="noop"))
    for a, b in zip(base, split):
        assert np.allclose(a.loglik, b.loglik, atol=1e-5) and a.greedy == b.greedy
    for iv in [Enrich(1, 0.0, 2), LayerGuided({2: 0.5, 4: 0.5}, 0.0), LayerGuided({3: 1.0}, 0.0, name="single_layer"),
               HeadSteer([(2, 1), (4, 0)], 0.0)]:
        got = score_items(tiny_lm.engine, items, iv)
        ref = split if iv.unsteered_aux_pass else base
        for a, b in zip(ref, got):
            assert a.loglik == b.loglik, iv


def test_enrich_matches_hand_reference_and_touches_only_target(tiny_lm, score):
    lm = tiny_lm
    w = make_waves(1, seed=5)[0]
    items, prompt = _items(lm, [w])
    src, gap, lam = 1, 2, 0.7
    out, cap, _ = _full_forward(lm, prompt, w)
    # reference: add lam * h_src[-1] to the output of layer src+gap at the last position
    add = lam * cap[src][0, -1]

    def hook(m, i, o):
        h = (o[0] if isinstance(o, tuple) else o).clone()
        h[0, -1] += add
        return (h,) + tuple(o[1:]) if isinstance(o, tuple) else h

    ref_out, ref_cap, _ = _full_forward(lm, prompt, w, hook_layer=src + gap, hook=hook)
    got = score(items, Enrich(src, lam, gap))[0]
    ids = [c[0] for c in items[0].continuations]
    ref = _logp_first(lm, ref_out.logits[0, -1], ids)
    assert torch.allclose(torch.tensor(got.first), ref, atol=1e-5)
    # locality: capture our run's states and compare with the unsteered ones
    e = lm.engine
    prep = e.prepare([items[0].tok])
    last = torch.tensor([prep.seq_len - 1])
    with Enrich(src, lam, gap).applied(e, prep, [items[0].tok], last):
        steered = e.run(prep, output_hidden_states=True).hidden_states
    plain = e.run(prep, output_hidden_states=True).hidden_states
    for l in range(src + gap):
        assert torch.equal(steered[l], plain[l])  # bit-identical below the target layer
    diff = (steered[src + gap] - plain[src + gap]).abs().sum(-1)[0]
    assert torch.equal(diff[:-1], torch.zeros_like(diff[:-1]))  # only the last position changes
    assert torch.allclose(steered[src + gap][0, -1] - plain[src + gap][0, -1], add, atol=1e-5)


def _silence_states(lm, prompt, n):
    return _full_forward(lm, prompt, np.zeros(n, np.float32))


def test_layer_guided_matches_hand_reference(tiny_lm, score):
    lm = tiny_lm
    w = make_waves(1, seed=7)[0]
    items, prompt = _items(lm, [w])
    heads = [(2, 0), (2, 3), (4, 1), (1, 2)]
    weights = layer_weights(heads)
    assert weights == {1: 0.25, 2: 0.5, 4: 0.25}
    alpha = 1.5
    _, cap_a, _ = _full_forward(lm, prompt, w)
    _, cap_s, _ = _silence_states(lm, prompt, len(w))
    L = lm.engine.num_layers
    d = sum(wt * (cap_a[l][0, -1] - cap_s[l][0, -1]) for l, wt in weights.items())
    h = cap_a[L][0, -1] + alpha * d  # pre-norm output of the last block
    logits = lm.model.lm_head(lm.model.model.language_model.norm(h))
    ids = [c[0] for c in items[0].continuations]
    ref = _logp_first(lm, logits, ids)
    got = score(items, LayerGuided(weights, alpha, heads=heads))[0]
    assert torch.allclose(torch.tensor(got.first), ref, atol=1e-5)


def test_head_steering_matches_hand_reference(tiny_lm, score):
    lm = tiny_lm
    w = make_waves(1, seed=9)[0]
    items, prompt = _items(lm, [w])
    heads = [(2, 1), (2, 3), (3, 0)]
    alpha = 2.0
    D = lm.spec.head_dim(lm.model)
    _, _, hin_a = _full_forward(lm, prompt, w)
    _, _, hin_s = _silence_states(lm, prompt, len(w))
    adds = {}
    for l, hh in heads:
        W = lm.model.model.language_model.layers[l - 1].self_attn.o_proj.weight
        delta = hin_a[l][hh * D:(hh + 1) * D] - hin_s[l][hh * D:(hh + 1) * D]
        adds[l] = adds.get(l, 0) + alpha * (W[:, hh * D:(hh + 1) * D] @ delta)
    hooks_ = []

    def make(l):
        def fn(m, a, o):
            o = o.clone()
            o[0, -1] += adds[l]
            return o
        return fn

    # apply both layers' additions in one reference forward
    inp = lm.processor(text=[prompt], audio=[w], sampling_rate=16000, return_tensors="pt")
    for l in adds:
        hooks_.append(lm.model.model.language_model.layers[l - 1].self_attn.o_proj.register_forward_hook(make(l)))
    try:
        with torch.no_grad():
            logits = lm.model(**inp).logits[0, -1]
    finally:
        for h in hooks_:
            h.remove()
    ids = [c[0] for c in items[0].continuations]
    ref = _logp_first(lm, logits, ids)
    got = score(items, HeadSteer(heads, alpha))[0]
    assert torch.allclose(torch.tensor(got.first), ref, atol=1e-5)


@pytest.mark.parametrize("iv", [Enrich(1, 0.5, 2), LayerGuided({2: 0.5, 3: 0.5}, 1.0),
                                HeadSteer([(2, 1), (3, 2)], 1.0)],
                         ids=["enrich", "layer_guided", "head"])
def test_steered_batched_equals_unbatched(tiny_lm, iv, score):
    waves = make_waves(3, seed=11)
    items, _ = _items(tiny_lm, waves)
    one = [score([it], iv)[0] for it in items]
    many = score(items, iv)
    for a, b in zip(one, many):
        assert np.allclose(a.loglik, b.loglik, atol=1e-5)


@pytest.mark.parametrize("kwargs,msg", [
    ({"steer": "bogus"}, "valid: none, enrich, layer_guided, single_layer, head"),
    ({"steer": "layer_guided", "layers": "[0,9]", "alpha": 1}, r"layers \[0, 9\] out of range: valid layers are 1..4"),
    ({"steer": "head", "heads": "2:9", "alpha": 1}, r"out of range \(layers 1..4, heads 0..3\)|valid heads are"),
    ({"steer": "enrich", "source_layer": 1, "alpha": "nan"}, "must be finite"),
    ({"steer": "enrich", "source_layer": 1, "alpha": "inf", "gap": 1}, "must be finite"),
    ({"steer": "enrich", "source_layer": 3, "gap": 2, "alpha": 1}, "source_layer 3 out of range"),
    ({"steer": "layer_guided", "calibration": "/nonexistent/dir"}, "calibration artifact not found"),
    ({"steer": "layer_guided", "control": "sideways"}, "valid: random, none"),
    ({"alpha": 1.0}, "steer=none"),
])
def test_invalid_arguments_fail_before_any_forward(tiny_qwen2_audio_dir, kwargs, msg):
    from audio_tasks.model import AudioLALM

    with pytest.raises((ValueError, FileNotFoundError), match=msg):
        AudioLALM(pretrained=str(tiny_qwen2_audio_dir), **kwargs)


def test_mismatched_calibration_artifact(tiny_qwen2_audio_dir, tmp_path):
    from audio_tasks.model import AudioLALM
    from interventions.calibrate import save_artifact

    save_artifact(tmp_path / "cal", {"model_id": str(tiny_qwen2_audio_dir)}, {"num_layers": 32, "num_heads": 32},
                  {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="32 layers; this model has 4"):
        AudioLALM(pretrained=str(tiny_qwen2_audio_dir), steer="layer_guided", calibration=str(tmp_path / "cal"))
    save_artifact(tmp_path / "cal2", {"model_id": "other/model"}, {"num_layers": 4, "num_heads": 4},
                  {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="was made for model 'other/model'"):
        AudioLALM(pretrained=str(tiny_qwen2_audio_dir), steer="layer_guided", calibration=str(tmp_path / "cal2"))


def test_random_control_is_deterministic_and_matched(tiny_qwen2_audio_dir):
    from audio_tasks.calibration import random_heads

    a = random_heads(4, 4, 5, seed=3)
    assert a == random_heads(4, 4, 5, seed=3) and len(set(a)) == 5
    assert a != random_heads(4, 4, 5, seed=4)
    assert all(1 <= l <= 4 and 0 <= h < 4 for l, h in a)


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_on_exit_and_on_error(tiny_lm):
    from interventions import hooks

    m, s = tiny_lm.model, tiny_lm.spec
    before = _n_hooks(m)
    items, _ = _items(tiny_lm, make_waves(1))
    prep = tiny_lm.engine.prepare([items[0].tok])
    last = torch.tensor([prep.seq_len - 1])
    for iv in (Enrich(1, 0.5, 2), LayerGuided({2: 1.0}, 1.0), HeadSteer([(2, 1)], 1.0)):
        with pytest.raises(RuntimeError, match="boom"):
            with iv.applied(tiny_lm.engine, prep, [items[0].tok], last):
                assert _n_hooks(m) > before
                raise RuntimeError("boom")
        assert _n_hooks(m) == before
    with pytest.raises(RuntimeError):
        with hooks.mask_attention(m, s, prep.attention_mask, last, prep.audio_mask):
            raise RuntimeError("boom")
    assert _n_hooks(m) == before
