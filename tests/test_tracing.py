"""Causal tracing (analysis/tracing.py): RR identities, an independent full-model reference, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import tracing
from interventions.scoring import MCItem

USER = "What is the gender of the speaker in the speech? Possible options: male, female."
PREFIX = "The speaker's gender is"



def _wave(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def _item(lm, wave, gold=0, user=USER, prefix=PREFIX, with_doc=True):
    eng = lm.engine
    prompt = eng.render_chat(user, assistant_prefix=prefix)
    meta = {"gold": gold, "prompt": prompt}
    if with_doc:
        meta["doc"] = {"choices": ["male", "female"], "assistant_prefix": prefix, "user_prompt": user}
    return MCItem(eng.tokenize(prompt, [wave]), [eng.encode_text(" male"), eng.encode_text(" female")], meta)


@pytest.fixture(scope="module")
def traced(tiny_lm):
    w = _wave(1.0, 3)
    it = _item(tiny_lm, w)
    run = tracing.prepare_trace(tiny_lm.engine, it)
    return tiny_lm, w, it, run


def _rr(p, run):
    return (p - run.p_corrupted) / (run.p_clean - run.p_corrupted)


def test_rr_identities(traced):
    lm, _, it, run = traced
    L, T = run.num_layers, run.seq_len
    assert abs(run.p_clean - run.p_corrupted) > 1e-6  # the audio matters, so RR is well defined
    every = [{l: list(range(T))} for l in range(1, L + 1)]  # all positions, audio included
    p = tracing.patched_probs(lm.engine, run, every + [{}] + [tracing.layer_variants(run)[-1]], rows=4)
    np.testing.assert_allclose(p[:L], run.p_clean, rtol=1e-5, atol=0)
    np.testing.assert_allclose(_rr(p[:L], run), 1.0, atol=1e-3)
    assert p[L] == pytest.approx(run.p_corrupted, rel=1e-5) and abs(_rr(p[L], run)) < 1e-3  # nothing patched
    assert p[L + 1] == pytest.approx(run.p_clean, rel=1e-5)  # layer-wise at the last layer
    assert tracing.recovery_rate(p[L + 1], run) == pytest.approx(1.0, abs=1e-3)


def _full_model_probs(lm, wave, prompt, target, patches, clean_states):
    """Reference: the full model on (text, silence), a forward hook copying the clean block outputs."""
    model = lm.model
    layers = model.model.language_model.layers
    inp = lm.processor(text=[prompt], audio=[np.zeros_like(wave)], sampling_rate=16000, return_tensors="pt")
    handles = []
    for l, pos in patches.items():
        def hook(_m, _a, out, l=l, pos=pos):
            h = out[0] if isinstance(out, tuple) else out
            h = h.clone()
            h[:, pos] = clean_states[l][:, pos]
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

        handles.append(layers[l - 1].register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = model(**inp).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()
    return float(torch.softmax(logits, -1)[target])


def test_patched_runs_match_full_model_reference(traced):
    lm, w, it, run = traced
    model = lm.model
    prompt = it.meta["prompt"]
    # clean states captured with plain forward hooks on the full model
    clean = {}
    handles = [layer.register_forward_hook(lambda _m, _a, out, l=i + 1: clean.__setitem__(
        l, (out[0] if isinstance(out, tuple) else out).detach().clone()))
        for i, layer in enumerate(model.model.language_model.layers)]
    try:
        with torch.no_grad():
            inp = lm.processor(text=[prompt], audio=[w], sampling_rate=16000, return_tensors="pt")
            p_clean = float(torch.softmax(model(**inp).logits[0, -1].float(), -1)[run.target])
    finally:
        for h in handles:
            h.remove()
    assert run.p_clean == pytest.approx(p_clean, abs=1e-5)
    assert run.p_corrupted == pytest.approx(_full_model_probs(lm, w, prompt, run.target, {}, clean), abs=1e-5)
    L = run.num_layers
    pos = tracing.token_positions(run)
    extra = [{2: [pos[3]]}, {1: [pos[-1]]}, {3: [pos[-2]]}, {1: [pos[0]], 3: pos[-3:]}]
    got = tracing.patched_probs(lm.engine, run, tracing.layer_variants(run) + extra, rows=3)
    # layer-wise reference: ALL text (non-audio) positions of layer l, also those before the audio
    inp = lm.processor(text=[prompt], audio=[w], sampling_rate=16000, return_tensors="pt")
    text_pos = (inp["input_ids"][0] != model.config.audio_token_id).nonzero().squeeze(-1).tolist()
    ref = [_full_model_probs(lm, w, prompt, run.target, {l: text_pos}, clean) for l in range(1, L + 1)]
    ref += [_full_model_probs(lm, w, prompt, run.target, v, clean) for v in extra]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # text before the first audio token never sees the audio: identical in the clean and corrupted runs
    first = run.audio_positions[0]
    with torch.no_grad():
        from interventions import hooks

        with hooks.capture_residual(model, lm.spec, list(range(1, L + 1))) as cap:
            lm.engine.run(run.prep_corrupt)
    for l in range(1, L + 1):
        torch.testing.assert_close(cap[l][:, :first], run.clean_states[l][:, :first], atol=1e-6, rtol=0)


def test_batched_equals_one_at_a_time(traced):
    lm, _, _, run = traced
    L = run.num_layers
    variants = ([{l: [i]} for i in tracing.token_positions(run)[-2:] for l in range(1, L + 1)]
                + tracing.layer_variants(run))
    batched = tracing.patched_probs(lm.engine, run, variants, rows=5)
    single = np.array([tracing.patched_probs(lm.engine, run, [v], rows=1, prefix_cache=False)[0] for v in variants])
    np.testing.assert_allclose(batched, single, atol=1e-6, rtol=0)


def test_segments_from_the_prompt(tiny_lm):
    eng = tiny_lm.engine
    it = _item(tiny_lm, _wave(0.5, 1))
    ids = it.tok.input_ids.tolist()
    segs = tracing.prompt_segments(eng, it)
    tok = [eng.tokenizer.decode([t]) for t in ids]
    by = {s: [t for t, g in zip(tok, segs) if g == s] for s in set(segs)}
    assert by["object"] == [" male", ",", " female"]
    assert by["last"] == [" is"]
    assert "".join(by["late"]).endswith("The speaker's gender") and "".join(by["late"]).startswith(".")
    assert "".join(by["early"]).endswith("What is the gender of the speaker in the speech? Possible options:")
    assert "You are a helpful assistant." in "".join(by["pre_audio"])
    assert all(eng.tokenizer.decode([t]) == "<|AUDIO|>" for t, g in zip(ids, segs) if g == "audio")
    # without options in the prompt (P2) there are no object tokens; the prefix still splits early / late
    it2 = _item(tiny_lm, _wave(0.5, 1), user="What is the gender of the speaker in the speech?")
    s2 = tracing.prompt_segments(eng, it2)
    tok2 = [eng.tokenizer.decode([t]) for t in it2.tok.input_ids.tolist()]
    assert "object" not in s2
    assert "".join(t for t, g in zip(tok2, s2) if g == "late") == "The speaker's gender"
    # without the rendered prompt / doc the tokens are decoded and choices are unknown: no object tokens
    it3 = _item(tiny_lm, _wave(0.5, 1), with_doc=False)
    it3.meta.pop("prompt")
    s3 = tracing.prompt_segments(eng, it3)
    assert s3[-1] == "last" and "object" not in s3 and "early" in s3


def test_exclusions_and_summary(traced):
    lm, _, it, run = traced
    rec = tracing.trace_item(lm.engine, it, force=False)
    if rec["excluded"]:
        assert "layer_rr" not in rec and "token" not in rec
    forced = tracing.trace_item(lm.engine, it, force=True, rows=8)
    L = run.num_layers
    assert len(forced["layer_rr"]) == L and forced["layer_rr"][-1] == pytest.approx(1.0, abs=1e-3)
    tok = forced["token"]
    assert len(tok["rr"]) == len(tok["positions"]) and tok["segments"][-1] == "last"
    np.testing.assert_allclose(tok["rr"][-1][-1], 1.0, atol=1e-3)  # last token at the last layer
    recs = [dict(forced, excluded=[]), dict(forced, excluded=[]),
            dict(rec, excluded=["clean_wrong", "p_clean_le_p_corrupted"]), dict(rec, excluded=["corrupted_right"])]
    sm = tracing.summarize(recs)
    assert sm["n"] == 4 and sm["n_included"] == 2
    assert sm["exclusions"] == {"clean_wrong": 1, "corrupted_right": 1, "p_clean_le_p_corrupted": 1, "excluded": 2}
    np.testing.assert_allclose(sm["layer"]["mean"], forced["layer_rr"], atol=1e-12)
    obj = [row for row, s in zip(tok["rr"], tok["segments"]) if s == "object"]
    np.testing.assert_allclose(sm["segments"]["object"]["mean"], np.mean(obj, 0), atol=1e-12)
    assert sm["positions"]["tokens_shared"] and sm["positions"]["rel_positions"][-1] == -1
