"""The engine's parts (interventions/engine.py facade over audio_tokenizer, encoder_cache, prefix_cache, decoder):
byte-bounded caches evict exactly what their budget says and never change a score; the facade's scores equal the
model's own full forward; ``encode_audio`` gets the per-clip token counts as an explicit argument."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.helpers import make_waves

SR = 16000


def _engine(lm, **kw):
    """A fresh engine over the session's tiny Qwen2-Audio model (its own caches and counters)."""
    from interventions.engine import Engine

    return Engine(lm.model, lm.processor, lm.engine.spec, **kw)


def _items(e, waves):
    from interventions.scoring import MCItem

    prompts = [e.render_chat("male or female?", assistant_prefix="It is"), e.render_chat("", assistant_prefix="A:")]
    conts = [e.encode_text(" male"), e.encode_text(" female"), e.encode_text(" a longer continuation")]
    return [MCItem(e.tokenize(p, [w]), conts) for p in prompts for w in waves]


def test_byte_lru_evicts_least_recently_used_by_bytes():
    from interventions.byte_lru import ByteLRU

    lru = ByteLRU(100)
    lru.put("a", torch.zeros(10))  # 40 bytes
    lru.put("b", torch.zeros(5, dtype=torch.float64))  # 40 bytes
    assert lru.get("a") is not None  # a is now the most recently used
    lru.put("c", torch.zeros(3))  # 12 bytes: 92 <= 100, nothing evicted
    assert (list(lru.keys()), lru.nbytes) == (["b", "a", "c"], 92)
    lru.put("d", torch.zeros(20, dtype=torch.int8))  # 112 > 100: b (least recently used) goes
    assert (list(lru.keys()), lru.nbytes, lru.evictions) == (["a", "c", "d"], 72, 1)
    lru.put("big", torch.zeros(26))  # 104 bytes alone: over the whole budget, evicted with everything else
    assert (len(lru), lru.nbytes) == (0, 0)
    lru.keep = 2  # a reserved working set survives beyond the budget
    lru.put("x", torch.zeros(20))
    lru.put("y", torch.zeros(20))
    lru.put("z", torch.zeros(20))
    assert (list(lru.keys()), lru.nbytes) == (["y", "z"], 160)
    with pytest.raises(ValueError, match="max_bytes=-1; valid"):
        ByteLRU(-1)


def test_caches_bounded_by_bytes_evict_exactly_and_scores_are_unchanged(tiny_lm):
    from interventions.identity import clip_key
    from interventions.scoring import score_items

    waves = make_waves(3, seed=11)

    def run(e):
        items = _items(e, waves)  # two prompts x three clips; both prompts share each clip's audio prefix
        one = [score_items(e, [it], share_prefix=True)[0] for it in items]  # one at a time, prefix cache
        batch = score_items(e, items)  # all at once, no prefix cache
        return items, [(s.loglik, s.first, s.greedy) for s in one + batch]

    free = _engine(tiny_lm, encoder_cache_bytes=None, prefix_cache_bytes=None)
    items, ref = run(free)
    # What the budgets hold, from the tensor sizes: clip k has n_k audio placeholders of width d (float32);
    # a prefix of n tokens holds keys and values of L layers, H_kv heads of size D.
    cfg = tiny_lm.engine.spec.text_cfg(tiny_lm.model)
    d, L = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    hkv = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    D = int(getattr(cfg, "head_dim", None) or d // int(cfg.num_attention_heads))
    tid = free.audio_token_id
    n_audio = [int((it.tok.input_ids == tid).sum()) for it in items[:3]]
    points = [int((it.tok.input_ids == tid).nonzero()[-1]) + 1 for it in items[:3]]
    emb_bytes = [n * d * 4 for n in n_audio]
    kv_bytes = [L * 2 * hkv * n * D * 4 for n in points]
    assert emb_bytes == sorted(set(emb_bytes)) and kv_bytes == sorted(set(kv_bytes))  # longer clips, more bytes
    assert (free.encoder_calls, free.prefix_tokens_computed, free.prefix_hits) == (3, sum(points), 3)
    assert (len(free.encoder_cache.store), len(free.prefix_cache.store)) == (3, 3)

    # Budgets that hold one clip's embeddings / one prefix: every new entry evicts the previous one.
    e = _engine(tiny_lm, encoder_cache_bytes=emb_bytes[2], prefix_cache_bytes=kv_bytes[2])
    _, got = run(e)
    assert got == ref  # bit-identical scores
    # One at a time: each prompt's prefix (and clip) was evicted before the next prompt with that clip came:
    # six prefixes, six encodings.  The batch then found clip 2 cached and encoded clips 0 and 1 (1 is kept).
    assert (e.prefix_tokens_computed, e.prefix_hits) == (2 * sum(points), 0)
    assert e.encoder_calls == 6 + 2
    enc, pre = e.encoder_cache.store, e.prefix_cache.store
    assert (list(enc.keys()), enc.nbytes) == ([clip_key(waves[1])], emb_bytes[1])
    assert (len(pre), pre.nbytes) == (1, kv_bytes[2])  # the last prompt's prefix (clip 2)


def test_facade_scores_equal_the_models_own_full_forward(tiny_lm):
    from interventions.scoring import score_items

    e = _engine(tiny_lm)
    waves = make_waves(2, seed=12)
    prompt = e.render_chat("Who speaks?", assistant_prefix="It is")
    conts = [" male", " a female voice"]
    from interventions.scoring import MCItem

    items = [MCItem(e.tokenize(prompt, [w]), [e.encode_text(c) for c in conts]) for w in waves]
    for sp in (False, True):
        for it, w, s in zip(items, waves, score_items(e, items, share_prefix=sp)):
            for j, c in enumerate(conts):
                ctx = tiny_lm.processor(text=[prompt], audio=[w], sampling_rate=SR, return_tensors="pt")["input_ids"]
                full = tiny_lm.processor(text=[prompt + c], audio=[w], sampling_rate=SR, return_tensors="pt")
                ids, n = full["input_ids"][0], int(ctx.shape[1])
                with torch.no_grad():
                    lp = torch.log_softmax(tiny_lm.model(**full).logits[0].float(), -1)
                toks = [float(lp[k - 1, ids[k]]) for k in range(n, int(ids.shape[0]))]
                assert abs(s.loglik[j] - sum(toks)) < 1e-5
                assert abs(s.first[j] - toks[0]) < 1e-5


def test_encode_audio_gets_the_per_clip_token_counts_as_an_argument(tiny_lm):
    from interventions.engine import Engine

    spec = tiny_lm.engine.spec
    calls = []

    def spy(model, feats, counts):
        calls.append((sorted(feats), list(counts)))
        assert spec.encode_audio is not None
        return spec.encode_audio(model, feats, counts)

    e = Engine(tiny_lm.model, tiny_lm.processor, dataclasses.replace(spec, encode_audio=spy))
    waves = make_waves(2, seed=13)
    toks = [e.tokenize(e.render_chat("hi"), [w]) for w in waves]
    embs = e.audio_embeddings(toks)
    n = [int((t.input_ids == e.audio_token_id).sum()) for t in toks]
    assert calls == [(sorted(spec.processor_feature_keys), [k]) for k in n]  # only processor features, one clip each
    assert [x[0].shape[0] for x in embs] == n
    silent = e.audio_embeddings(toks, silence=True)  # silence of each clip's duration: same counts
    assert calls[2:] == [(sorted(spec.processor_feature_keys), [k]) for k in n]
    assert [x[0].shape[0] for x in silent] == n
    assert not np.allclose(silent[0][0].numpy(), embs[0][0].numpy())


def test_load_engine_sets_the_byte_budgets_and_refuses_a_negative_one(tiny_qwen2_audio_dir):
    from interventions import load_engine
    from interventions.engine import DEFAULT_PREFIX_CACHE_BYTES

    with pytest.raises(ValueError, match="prefix_cache_bytes=-5; valid: a number of bytes >= 0"):
        load_engine("/nonexistent/checkpoint", device="cpu", prefix_cache_bytes=-5)  # before any loading
    e = load_engine(str(tiny_qwen2_audio_dir), device="cpu", encoder_cache_bytes=1234)
    assert (e.encoder_cache.store.max_bytes, e.prefix_cache.store.max_bytes) == (1234, DEFAULT_PREFIX_CACHE_BYTES)
