"""Streaming input pipeline (audio_tasks/pipeline.py) and batched greedy generation (interventions/generation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from lm_eval.api.instance import Instance

from tests.helpers import make_waves

DOCS = [{"user_prompt": "What is the gender of the speaker? Options: male, female.",
         "assistant_prefix": "The speaker's gender is"},
        {"user_prompt": "Which animal makes this sound?", "assistant_prefix": "The animal is"}]
CONTS = [[" male", " female", " male voice with many tokens"], [" dog", " cat", " a small bird singing"]]


def _requests(tmp_path, n_docs=7):
    """Two tasks; clips given as files (some docs share a file) and as in-memory arrays."""
    waves = make_waves(n_docs, seed=5)
    reqs = []
    for t, (task, doc, conts) in enumerate(zip(("ta", "tb"), DOCS, CONTS)):
        for d in range(n_docs):
            w = waves[(d + t) % n_docs]
            if d % 2 == 0:
                path = tmp_path / f"clip{(d + t) % n_docs}.wav"
                if not path.exists():
                    sf.write(path, w, 16000, subtype="FLOAT")
                aud: object = str(path)
            else:
                aud = {"array": w, "sampling_rate": 16000}
            aux = {"audio": [aud]}
            for j, c in enumerate(conts):
                reqs.append(Instance("loglikelihood", dict(doc), ("ctx", c, aux), j, (task, d, 1)))
    return reqs


def _run(lm, reqs, workers):
    from audio_tasks.pipeline import Preparer

    lm.engine.clear_caches()
    lm.engine._fast_tokenize = None
    lm._preparer = Preparer(lm)  # fresh caches: every run prepares everything itself
    lm.prep_workers = workers
    return lm.loglikelihood(reqs)


def test_pipelined_scores_are_bit_identical_to_serial(tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    from audio_tasks import pipeline
    from audio_tasks.model import AudioLALM
    from interventions.scoring import MCItem, score_items

    monkeypatch.setattr(pipeline, "CHUNK_DOCS", 2)  # several chunks and windows with few docs
    monkeypatch.setattr(pipeline, "WINDOW_CHUNKS", 2)
    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=2, share_prefix="false")
    reqs = _requests(tmp_path)
    serial = _run(lm, reqs, 0)
    assert lm._preparer.stats["processor_docs"] > 0
    for workers in (1, 2, 3):
        got = _run(lm, reqs, workers)
        assert [(float(a), a.first_token_logprob, g) for a, g in got] == \
               [(float(a), a.first_token_logprob, g) for a, g in serial], workers

    # Independent of the pipeline: each doc tokenized on its own by the processor, scored on its own.
    lm.engine.clear_caches()
    for k in range(0, len(reqs), 3):
        r = reqs[k]
        prompt = r.args[2]["rendered_prompt"]
        aud = r.args[2]["audio"][0]
        w = sf.read(aud, dtype="float32")[0] if isinstance(aud, str) else aud["array"]
        p = lm.processor(text=[prompt], audio=[w], sampling_rate=16000, return_tensors="pt")
        from interventions.engine import Tokenized

        tok = Tokenized(p["input_ids"][0], [np.asarray(w, np.float32)],
                        {"input_features": p["input_features"], "feature_attention_mask": p["feature_attention_mask"]},
                        prompt)
        conts = [lm.engine.encode_text(reqs[k + j].args[1]) for j in range(3)]
        ref = score_items(lm.engine, [MCItem(tok, conts)])[0]
        for j in range(3):
            assert abs(float(serial[k + j][0]) - ref.loglik[j]) < 1e-5
            assert serial[k + j][1] == ref.greedy[j]


def test_batched_preparation_equals_per_doc_processor(tiny_lm):
    """One batched processor call per chunk gives the per-doc ids and the processor's mel features."""
    from audio_tasks.pipeline import Preparer

    prep = Preparer(tiny_lm)
    tiny_lm.engine._fast_tokenize = None
    waves = make_waves(4, seed=9)
    prompts = [tiny_lm.engine.render_chat(t, n_audio=1) for t in ("a", "a longer user prompt here", "", "b c")]
    toks = prep.tokenize_many(prompts, [[w] for w in waves])
    for p, w, t in zip(prompts, waves, toks):
        ref = tiny_lm.processor(text=[p], audio=[w], sampling_rate=16000, return_tensors="pt")
        assert torch.equal(t.input_ids, ref["input_ids"][0])
        # trimmed STFT (frames past the audio filled in): the stock features up to float rounding
        assert float((t.features["input_features"] - ref["input_features"]).abs().max()) <= 1e-6
        assert torch.equal(t.features["feature_attention_mask"], ref["feature_attention_mask"])
    # known clips now take the placeholder-expansion path, with the same ids
    again = prep.tokenize_many(prompts[::-1], [[w] for w in waves[::-1]])
    assert prep.stats["fast_docs"] == 4
    for a, b in zip(again, toks[::-1]):
        assert torch.equal(a.input_ids, b.input_ids)


def test_audio_decoded_once_per_content(tiny_lm, tmp_path):
    from audio_tasks.pipeline import Preparer

    prep = Preparer(tiny_lm)
    w = make_waves(1)[0]
    sf.write(tmp_path / "a.wav", w, 16000, subtype="FLOAT")
    a = prep.clips({"audio": [str(tmp_path / "a.wav")]}, "x")
    b = prep.clips({"audio": [str(tmp_path / "a.wav")]}, "x")
    c = prep.clips({"audio": [{"array": w.copy(), "sampling_rate": 16000}]}, "x")
    d = prep.clips({"audio": [{"array": w.copy(), "sampling_rate": 16000}]}, "x")
    assert prep.stats["audio_decoded"] == 2
    assert np.array_equal(a[0], b[0]) and np.array_equal(c[0], d[0]) and np.allclose(a[0], c[0], atol=1e-6)
    sf.write(tmp_path / "a.wav", w[:8000], 16000, subtype="FLOAT")  # file changed: decoded again
    assert len(prep.clips({"audio": [str(tmp_path / "a.wav")]}, "x")[0]) == 8000


def test_trimmed_whisper_features_equal_stock():
    from transformers import WhisperFeatureExtractor

    from audio_tasks.pipeline import _fast_processor

    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                                 return_attention_mask=True)

    class P:
        feature_extractor = fe

    fast = _fast_processor(P()).feature_extractor
    assert type(fast).__name__ == "TrimmedWhisperFeatureExtractor"
    rng = np.random.default_rng(0)
    kw = dict(sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt")
    for lens in ([5.0], [4.3, 5.7, 1.0, 2.2], [30.0], [29.99], [0.01]):
        ws = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in lens]
        a, b = fe(ws, **kw), fast(ws, **kw)
        assert torch.equal(a["attention_mask"], b["attention_mask"])
        assert float((a["input_features"] - b["input_features"]).abs().max()) <= 1.2e-7, lens


@pytest.mark.parametrize("bad", ["-1", "two", "1.5"])
def test_prep_workers_is_validated_before_loading(bad):
    from audio_tasks.model import AudioLALM

    with pytest.raises(ValueError, match="prep_workers"):
        AudioLALM(pretrained="/nonexistent/model", prep_workers=bad)


def test_ordered_prefetch_keeps_order_and_raises():
    import time

    from audio_tasks.pipeline import ordered_prefetch

    def job(i):
        def f():
            time.sleep(0.002 * ((7 * i) % 5))
            if i == 6:
                raise KeyError("boom")
            return i
        return f

    assert list(ordered_prefetch([job(i) for i in range(6)], 3)) == list(range(6))
    it = ordered_prefetch([job(i) for i in range(9)], 2)
    assert [next(it) for _ in range(6)] == list(range(6))
    with pytest.raises(KeyError):
        next(it)


# ---- batched generation -------------------------------------------------------------------------

def _hf_greedy(lm, prompt, wave, max_new):
    inp = lm.processor(text=[prompt], audio=[wave], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        gen = lm.model.generate(**inp, max_new_tokens=max_new, do_sample=False,
                                eos_token_id=lm.tokenizer.eos_token_id, pad_token_id=lm.engine.pad_token_id)
    return gen[0, inp["input_ids"].shape[1]:].tolist()


def _cut(lm, ids, stops):
    """Reference stop rule, computed naively: the first prefix whose full decode contains a stop string."""
    out = []
    for t in ids:
        if t == lm.tokenizer.eos_token_id:
            break
        out.append(t)
        if any(s in lm.tokenizer.decode(out, skip_special_tokens=True) for s in stops):
            break
    return out


def test_batched_generation_equals_hf_greedy_generate(tiny_lm):
    from interventions.generation import greedy_generate

    eng = tiny_lm.engine
    waves = make_waves(4, seed=11)
    users = ["Describe.", "What is the gender of the speaker in this clip? Answer in one word please.", "",
             "Which language?"]
    prompts = [eng.render_chat(u, assistant_prefix=p, n_audio=1) for u, p in
               zip(users, ["", "The speaker's gender is", "Sure:", ""])]
    max_new = 10
    refs = [_hf_greedy(tiny_lm, p, w, max_new) for p, w in zip(prompts, waves)]
    dec = lambda ids: tiny_lm.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    # stop strings: one from the middle of the reference text, none, one that never occurs, two of which one occurs
    mid = dec(refs[0][:4])[-2:] if dec(refs[0][:4]).strip() else "zz"
    late = dec(refs[3][:7])[-1:] or "q"
    stops = [[mid], [], ["\x00never"], ["\x00nope", late]]
    toks = [eng.tokenize(p, [w]) for p, w in zip(prompts, waves)]
    assert len({int(t.input_ids.shape[0]) for t in toks}) > 1  # mixed prompt lengths: left padding exercised
    gens = greedy_generate(eng, toks, max_new_tokens=[max_new, max_new, 6, max_new], until=stops)
    for b, (g, ref) in enumerate(zip(gens, refs)):
        want = _cut(tiny_lm, ref[: (6 if b == 2 else max_new)], stops[b])
        assert g.ids == want, b
        text = dec(want)
        for s in stops[b]:
            text = text.split(s)[0] if s in text else text
        assert g.text == text
    assert gens[1].stop in ("length", "eos") and gens[2].stop in ("length", "eos")


def test_generate_until_batches_match_single_requests(tiny_qwen2_audio_dir):
    from audio_tasks.model import AudioLALM

    waves = make_waves(5, seed=2)

    def reqs():
        return [Instance("generate_until", dict(DOCS[i % 2]),
                         ("ctx", {"until": ["\n\n", "."] if i % 2 else ["\n"], "max_gen_toks": 4 + i},
                          {"audio": [{"array": w, "sampling_rate": 16000}]}), 0, ("t", i, 1))
                for i, w in enumerate(waves)]

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=3)
    batched = lm.generate_until(reqs())
    rs = reqs()
    for i, r in enumerate(rs):
        lm.generate_until([r])  # renders the prompt into the request's aux
        prompt = r.args[2]["rendered_prompt"]
        until = r.args[1]["until"]
        ids = _cut(lm, _hf_greedy(lm, prompt, waves[i], 4 + i), until)
        text = lm.tokenizer.decode(ids, skip_special_tokens=True)
        for u in until:
            text = text.split(u)[0] if u in text else text
        assert batched[i] == text, i


def test_missing_audio_file_fails_before_any_forward(tiny_lm, tmp_path):
    from audio_tasks.audio import AudioError

    w = make_waves(1)[0]
    sf.write(tmp_path / "ok.wav", w, 16000, subtype="FLOAT")
    reqs = [Instance("loglikelihood", dict(DOCS[0]), ("ctx", " male", {"audio": [str(p)]}), 0, ("t", d, 1))
            for d, p in enumerate([tmp_path / "ok.wav"] * 40 + [tmp_path / "missing.wav"])]
    calls = tiny_lm.engine.decoder_calls
    with pytest.raises(AudioError, match="missing.wav.*no such file"):
        tiny_lm.loglikelihood(reqs)
    assert tiny_lm.engine.decoder_calls == calls
