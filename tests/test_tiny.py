"""The three original architectures end to end on their tiny offline models (qwen2_audio, voxtral, qwen2_5_omni;
the others: tests/test_specs_more.py):
``audio_lalm`` scores equal an independent reference from the model's own full forward, batching does not
change scores, one decoder pass per doc, one audio-encoder run per distinct clip; plus the architecture
facts the specs rely on (Voxtral's 375 tokens per 30-s window, Qwen2.5-Omni's M-RoPE positions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import CLIPS, DOCS, MULTI, PROMPTS, SINGLE, SR, full_forward_reference, tiny_requests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARCHS = ["qwen2_audio", "voxtral", "qwen2_5_omni"]
@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from audio_tasks.tiny import build

    root = tmp_path_factory.mktemp("tiny_models")
    return {a: build(a, root / a) for a in ARCHS}


@pytest.fixture(scope="module")
def get_lm(tiny_dirs):
    from audio_tasks.model import AudioLALM

    cache: dict = {}

    def get(arch: str, batch_size: int, fresh: bool = False):
        if fresh:
            return AudioLALM(pretrained=str(tiny_dirs[arch]), device="cpu", batch_size=batch_size)
        key = (arch, batch_size)
        if key not in cache:
            cache[key] = AudioLALM(pretrained=str(tiny_dirs[arch]), device="cpu", batch_size=batch_size)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def scored(get_lm):
    """(lm, requests, results) of all choices (single- and multi-token) per (arch, batch size), run once."""
    cache: dict = {}

    def get(arch: str, batch_size: int):
        if (arch, batch_size) not in cache:
            lm = get_lm(arch, batch_size)
            reqs = tiny_requests(SINGLE + MULTI)
            cache[arch, batch_size] = (lm, reqs, lm.loglikelihood(reqs))
        return cache[arch, batch_size]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_match_full_forward_reference(scored, arch):
    lm, reqs, res = scored(arch, 2)
    assert all(len(lm.engine.encode_text(c)) == 1 for c in SINGLE)
    assert all(len(lm.engine.encode_text(c)) > 1 for c in MULTI)  # both scoring paths exercised
    assert len(res) == len(reqs)
    counts, ctx_ids = set(), {}
    for r, (ll, greedy) in zip(reqs, res):
        prompt, wave = r.args[2]["rendered_prompt"], CLIPS[DOCS[r.doc_id][1]]
        if r.doc_id not in ctx_ids:
            ctx_ids[r.doc_id] = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR,
                                             return_tensors="pt")["input_ids"][0]
            assert int((ctx_ids[r.doc_id] == lm.engine.audio_token_id).sum()) > 0
            counts.add(int((ctx_ids[r.doc_id] == lm.engine.audio_token_id).sum()))
        ref, ref_first, ref_greedy = full_forward_reference(lm, prompt, wave, r.args[1], ctx_ids[r.doc_id])
        assert abs(float(ll) - ref) < 1e-4, (arch, r.doc_id, r.args[1], float(ll), ref)
        assert abs(ll.first_token_logprob - ref_first) < 1e-4
        assert greedy == ref_greedy
    if arch != "voxtral":  # Voxtral: 375 tokens for any clip up to 30 s
        assert len(counts) == 2, "the two clips must expand to different audio-token counts"


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_unbatched(scored, arch):
    a = scored(arch, 1)[2]
    b = scored(arch, 2)[2]
    assert max(abs(float(x[0]) - float(y[0])) for x, y in zip(a, b)) < 1e-4
    assert max(abs(x[0].first_token_logprob - y[0].first_token_logprob) for x, y in zip(a, b)) < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]


@pytest.mark.parametrize("arch", ARCHS)
def test_one_decoder_pass_per_doc_and_one_encoding_per_clip(get_lm, arch):
    lm = get_lm(arch, 1, fresh=True)
    lm.share_prefix = "false"  # clip 0 appears under two prompts; shared prefixes: tests/test_prefix_cache.py
    reqs = tiny_requests(SINGLE)
    lm.loglikelihood(reqs)
    assert lm.engine.decoder_calls == len(DOCS)  # all choices of a doc share one pass
    assert lm.engine.encoder_calls == len(CLIPS)  # each distinct clip encoded once
    lm.loglikelihood(tiny_requests(SINGLE))
    assert lm.engine.encoder_calls == len(CLIPS)  # cached encodings are reused


def test_voxtral_window_token_count(get_lm):
    """375 placeholders per 30-s window, equal to what the model's own encoder + projector produce."""
    lm = get_lm("voxtral", 2)
    proc, model = lm.processor, lm.model
    prompt = lm.engine.render_chat("Hi", n_audio=1)
    assert prompt.startswith("<s>[INST][BEGIN_AUDIO][AUDIO]Hi[/INST]")
    for seconds, windows in ((1.1, 1), (30.0, 1), (31.0, 2)):
        wav = np.zeros(int(SR * seconds), dtype=np.float32)
        out = proc(text=[prompt], audio=[wav], sampling_rate=SR, return_tensors="pt")
        assert tuple(out["input_features"].shape) == (windows, 128, 3000)
        n = int((out["input_ids"] == model.config.audio_token_id).sum())
        assert n == 375 * windows
        with torch.no_grad():
            emb = model.get_audio_features(out["input_features"]).pooler_output
        assert emb.shape[0] == n
    assert lm.spec.audio_window_s == 0.0 and lm.engine.audio_window_s is None  # no cut: long clips get several windows


def test_qwen2_5_omni_positions_equal_get_rope_index(get_lm):
    """The engine's sequential positions (3 equal rows) are the model's own M-RoPE positions for
    audio + text prompts, also for a left-padded batch of prompts of different lengths."""
    lm = get_lm("qwen2_5_omni", 2)
    eng = lm.engine
    toks = [eng.tokenize(eng.render_chat(PROMPTS[0]["user_prompt"], assistant_prefix="The answer is"), [CLIPS[0]]),
            eng.tokenize(eng.render_chat("", assistant_prefix="The"), [CLIPS[1]])]
    prep = eng.prepare(toks)
    assert prep.position_ids.shape == (3, 2, prep.seq_len)
    seqlens = torch.cat([lm.engine.features(t)["feature_attention_mask"].sum(-1) for t in toks])
    pos, _ = lm.model.model.get_rope_index(prep.input_ids, None, None, prep.attention_mask, False, seqlens)
    real = prep.attention_mask.bool()
    for r in range(3):
        assert torch.equal(pos[r][real], prep.position_ids[r][real])


def test_fresh_process_loads_tiny_processors(tiny_dirs):
    """The tiny Voxtral / Qwen2.5-Omni dirs name processor classes registered by ``audio_tasks.tiny``;
    ``load_model`` must import that module itself (a fresh ``lm_eval`` run has not), while the specs
    import nothing from ``audio_tasks``."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from audio_tasks.model import load_model; "
            "print(json.dumps([type(load_model(d)[1]).__name__ for d in sys.argv[1:]]))")
    dirs = [str(tiny_dirs["voxtral"]), str(tiny_dirs["qwen2_5_omni"])]
    out = subprocess.run([sys.executable, "-c", code, *dirs], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["TinyVoxtralProcessor", "TinyQwen2_5OmniProcessor"]
