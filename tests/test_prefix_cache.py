"""Shared audio prefixes: a clip scored under several prompt formats / tasks / interventions runs its
audio prefix (system turn + audio, up to the last audio token) through the decoder once, and every
score still equals an independent reference from the model's own full forward (within 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARCHS = ["qwen2_audio", "voxtral", "qwen2_5_omni"]
SR = 16000
# Three prompt formats (as three tasks) over the same two clips.
FORMATS = {
    "fmt_question": {"user_prompt": "What is the gender of the speaker? Possible options: male, female.",
                     "assistant_prefix": "The speaker's gender is"},
    "fmt_audio_only": {"user_prompt": "", "assistant_prefix": "The speaker's gender is"},
    "fmt_other": {"user_prompt": "Listen and answer: who is speaking, a man or a woman?",
                  "assistant_prefix": "Answer:"},
}
CONTS = [" male", " female", " male voice with many tokens"]


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(21)
    return [(0.1 * rng.standard_normal(int(SR * s))).astype(np.float32) for s in (1.3, 2.2)]


CLIPS = _clips()


def _requests() -> list[Instance]:
    reqs = []
    for task, doc in FORMATS.items():
        for d, clip in enumerate(CLIPS):
            aux = {"audio": [{"array": clip, "sampling_rate": SR}]}
            for j, c in enumerate(CONTS):
                reqs.append(Instance("loglikelihood", dict(doc), ("ctx", c, aux), j, (task, d, 1)))
    return reqs


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from audio_tasks.tiny import build

    root = tmp_path_factory.mktemp("tiny_prefix")
    return {a: build(a, root / a) for a in ARCHS}


def _lm(path, **kw):
    from audio_tasks.model import AudioLALM

    return AudioLALM(pretrained=str(path), device="cpu", **kw)


def _reference(lm, prompt: str, wave: np.ndarray, cont: str):
    """(sum, first, greedy) of the continuation from the model's own full forward, and the prefix
    length (one past the last audio token) of the prompt."""
    ctx = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR, return_tensors="pt")["input_ids"][0]
    full = lm.processor(text=[prompt + cont], audio=[wave], sampling_rate=SR, return_tensors="pt")
    ids, n = full["input_ids"][0], ctx.shape[0]
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(**full).logits[0].float(), -1)
    toks = [lp[k - 1, ids[k]].item() for k in range(n, ids.shape[0])]
    greedy = all(int(lp[k - 1].argmax()) == int(ids[k]) for k in range(n, ids.shape[0]))
    audio_pos = (ctx == lm.engine.audio_token_id).nonzero().squeeze(-1)
    return sum(toks), toks[0], greedy, int(audio_pos[-1]) + 1


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_prefix_scores_equal_full_forward_and_prefix_runs_once_per_clip(tiny_dirs, arch):
    lm = _lm(tiny_dirs[arch], batch_size=2, share_prefix="true")  # across tasks: asked for (auto: per task)
    reqs = _requests()
    res = lm.loglikelihood(reqs)
    prefix_len = {}
    for r, (ll, greedy) in zip(reqs, res):
        prompt = r.args[2]["rendered_prompt"]
        ref, first, ref_greedy, p = _reference(lm, prompt, CLIPS[r.doc_id], r.args[1])
        assert abs(float(ll) - ref) < 1e-4, (arch, r.task_name, r.doc_id, r.args[1], float(ll), ref)
        assert abs(ll.first_token_logprob - first) < 1e-4
        assert greedy == ref_greedy
        prefix_len.setdefault(r.doc_id, set()).add(p)
    # The prefix is the same for all three formats of a clip ...
    assert all(len(v) == 1 for v in prefix_len.values())
    # ... and ran through the decoder once per clip; the other 2 formats of each clip reused it.
    assert lm.engine.prefix_tokens_computed == sum(next(iter(v)) for v in prefix_len.values())
    assert lm.engine.prefix_hits == len(FORMATS) * len(CLIPS) - len(CLIPS)
    assert lm.engine.encoder_calls == len(CLIPS)


@pytest.mark.parametrize("arch", ARCHS)
def test_share_prefix_false_gives_the_same_scores_without_prefix_passes(tiny_dirs, arch):
    shared = _lm(tiny_dirs[arch], batch_size=3, share_prefix="true").loglikelihood(_requests())
    lm = _lm(tiny_dirs[arch], batch_size=3, share_prefix="false")
    plain = lm.loglikelihood(_requests())
    assert lm.engine.prefix_tokens_computed == 0 and lm.engine.prefix_hits == 0
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(shared, plain)) < 1e-4
    assert [a[1] for a in shared] == [b[1] for b in plain]


def test_auto_shares_only_when_a_prefix_repeats(tiny_dirs):
    lm = _lm(tiny_dirs["qwen2_audio"], batch_size=2)
    one_format = [r for r in _requests() if r.task_name == "fmt_question"]  # distinct clips: no sharing
    lm.loglikelihood(one_format)
    assert lm.engine.prefix_tokens_computed == 0
    assert lm.engine.decoder_calls == 2  # one pass for both docs + one for the multi-token continuations


def test_share_prefix_argument_is_validated_before_loading(tiny_dirs):
    with pytest.raises(ValueError, match="share_prefix='sometimes'; valid: auto, true, false"):
        _lm(tiny_dirs["qwen2_audio"], share_prefix="sometimes")


def test_prefix_cache_eviction_recomputes_and_stays_exact(tiny_dirs):
    """With a one-entry prefix cache, alternating clips evict each other: still exact, recomputed."""
    from interventions.scoring import MCItem, score_items

    lm = _lm(tiny_dirs["qwen2_audio"], batch_size=1)
    e = lm.engine
    e.prefix_cache_size = 1
    prompt = e.render_chat("male or female?", assistant_prefix="It is")
    conts = [e.encode_text(" male"), e.encode_text(" female")]
    items = [MCItem(e.tokenize(prompt, [CLIPS[k]]), conts) for k in (0, 1, 0)]
    got = [score_items(e, [it], share_prefix=True)[0] for it in items]
    assert e.prefix_hits == 0  # the third item's prefix was evicted by the second
    assert e.prefix_tokens_computed == sum(e.split_point(it.tok) for it in items)
    for it, g, k in zip(items, got, (0, 1, 0)):
        _, first, _, _ = _reference(lm, prompt, CLIPS[k], " male")
        assert abs(g.first[0] - first) < 1e-4


def test_steered_batch_runs_the_context_once_and_the_last_position_per_pass(tiny_dirs):
    """Head steering: the prompt minus its last position runs once (unsteered, cached); the unsteered
    auxiliary pass the paper caches and the steered pass each cover the last position only; the
    silence pass is a full-length pass (it has other inputs). With share_prefix the audio prefix
    comes from the cache, so the context pass covers only the text after the audio."""
    from interventions.scoring import MCItem, score_items
    from interventions.steering import HeadSteer

    lm = _lm(tiny_dirs["qwen2_audio"], batch_size=2)
    e = lm.engine
    prompt = e.render_chat("male or female?", assistant_prefix="It is")
    conts = [e.encode_text(" male"), e.encode_text(" female")]
    items = [MCItem(e.tokenize(prompt, [c]), conts) for c in CLIPS]
    T = max(int(it.tok.input_ids.shape[0]) for it in items)
    p = max(e.split_point(it.tok) for it in items)
    lengths: list[int] = []
    h = lm.spec.layer_modules(lm.model)[0].register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    try:
        score_items(e, items, HeadSteer([(2, 1), (3, 0)], 1.0))
        plain = list(lengths)
        lengths.clear()
        score_items(e, items, HeadSteer([(2, 1), (3, 0)], 1.0), share_prefix=True)
    finally:
        h.remove()
    assert sorted(plain) == sorted([T - 1, T, 1, 1])  # context, silence, unsteered aux, steered
    assert sorted(lengths) == sorted([p, T - p - 1, T, 1, 1])  # + the audio prefix pass, once
