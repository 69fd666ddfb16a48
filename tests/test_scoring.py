"""audio_lalm scoring against independent references computed from the model's own forward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

from tests.helpers import make_waves, processor_full_forward

DOC = {"user_prompt": "What is the gender of the speaker in the speech? Possible options: male, female.",
       "assistant_prefix": "The speaker's gender is"}
CONTS = [" male", " female", " male voice with many tokens"]


def _requests(waves, conts=CONTS, doc=DOC, task="t"):
    reqs = []
    for d, w in enumerate(waves):
        aux = {"audio": [{"array": w, "sampling_rate": 16000}]}
        for j, c in enumerate(conts):
            reqs.append(Instance("loglikelihood", dict(doc), ("ctx", c, aux), j, (task, d, 1)))
    return reqs


@pytest.mark.parametrize("batch_size", [1, 3])
def test_scores_match_full_forward_reference(tiny_qwen2_audio_dir, batch_size):
    from audio_tasks.model import AudioLALM

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=batch_size)
    waves = make_waves(4)
    reqs = _requests(waves)
    res = lm.loglikelihood(reqs)
    assert len(lm.engine.encode_text(" male voice with many tokens")) > 1  # multi-token path exercised
    for r, (ll, greedy) in zip(reqs, res):
        prompt = r.args[2]["rendered_prompt"]
        ref, ref_first, ref_greedy = processor_full_forward(lm, prompt, waves[r.doc_id], r.args[1])
        assert abs(float(ll) - ref) < 1e-4
        assert abs(ll.first_token_logprob - ref_first) < 1e-4
        assert greedy == ref_greedy


def test_batched_equals_unbatched_and_padding_invariant(tiny_qwen2_audio_dir):
    from audio_tasks.model import AudioLALM

    waves = make_waves(5, seed=3)
    a = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=1).loglikelihood(_requests(waves))
    b = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=5).loglikelihood(_requests(waves))
    assert max(abs(float(x[0]) - float(y[0])) for x, y in zip(a, b)) < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]


def test_one_forward_per_doc_and_one_encoding_per_clip(tiny_qwen2_audio_dir):
    from audio_tasks.model import AudioLALM

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=1)
    waves = make_waves(3)
    reqs = _requests(waves, conts=[" male", " female"])
    assert all(len(lm.engine.encode_text(c)) == 1 for c in (" male", " female"))
    lm.loglikelihood(reqs)
    assert lm.engine.decoder_calls == 3  # one decoder pass per doc, shared by both choices
    assert lm.engine.encoder_calls == 3  # one audio-encoder run per distinct clip
    lm.loglikelihood(reqs)  # same clips again: encoder output is reused
    assert lm.engine.encoder_calls == 3


def test_rendered_prompt_is_the_models_chat_format(tiny_lm):
    reqs = _requests(make_waves(1), conts=[" male"])
    tiny_lm.loglikelihood(reqs)
    prompt = reqs[0].args[2]["rendered_prompt"]
    assert prompt.endswith("<|im_start|>assistant\nThe speaker's gender is")
    assert "<|audio_bos|><|AUDIO|><|audio_eos|>\nWhat is the gender of the speaker in the speech?" in prompt


def test_text_only_requests_match_lm_eval_hf(tiny_qwen2_audio_dir, tmp_path):
    """Text-only requests score like lm-eval's own `hf` model on the same text weights."""
    from lm_eval.models.huggingface import HFLM
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from audio_tasks.model import AudioLALM

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=2)
    tcfg = lm.model.config.text_config.to_dict()
    text = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in tcfg.items() if k not in ("architectures",)}))
    text.model.load_state_dict(lm.model.model.language_model.state_dict())
    text.lm_head.load_state_dict(lm.model.lm_head.state_dict())
    text.save_pretrained(tmp_path / "text")
    lm.tokenizer.save_pretrained(tmp_path / "text")
    hf = HFLM(pretrained=str(tmp_path / "text"), device="cpu", batch_size=1)
    reqs = [Instance("loglikelihood", {}, ("The speaker's gender is", c), i, ("t", 0, 1))
            for i, c in enumerate([" male", " female", " male voice with many tokens"])]
    ours = lm.loglikelihood(reqs)
    theirs = hf.loglikelihood(reqs)
    for (a, ga), (b, gb) in zip(ours, theirs):
        assert abs(float(a) - float(b)) < 1e-4 and ga == gb


def test_unknown_arguments_and_steer_names_fail_fast(tiny_qwen2_audio_dir):
    from audio_tasks.model import AudioLALM

    with pytest.raises(ValueError, match="unknown model argument.*bogus.*valid:"):
        AudioLALM(pretrained=str(tiny_qwen2_audio_dir), bogus=1)
    with pytest.raises(ValueError, match="steer='sideways'.*valid: none, enrich, layer_guided"):
        AudioLALM(pretrained=str(tiny_qwen2_audio_dir), steer="sideways")


def test_bad_audio_errors_name_doc_and_file(tiny_lm, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio")
    for audio, msg in [(str(bad), "broken.wav"), ({"array": np.zeros(0, np.float32), "sampling_rate": 16000}, "empty"),
                       ({"array": np.full(1600, np.nan, np.float32), "sampling_rate": 16000}, "non-finite")]:
        req = Instance("loglikelihood", dict(DOC), ("ctx", " male", {"audio": [audio]}), 0, ("mytask", 7, 1))
        with pytest.raises(ValueError, match=msg) as e:
            tiny_lm.loglikelihood([req])
        assert "task mytask, doc 7" in str(e.value)


def test_stereo_and_resampling(tiny_lm, tmp_path):
    import soundfile as sf

    w = make_waves(1)[0]
    stereo = np.stack([w, w], 1)
    sf.write(tmp_path / "st.wav", stereo, 16000)
    w8 = w[::2].copy()
    sf.write(tmp_path / "m8k.wav", w8, 8000)
    r1 = tiny_lm.loglikelihood([Instance("loglikelihood", dict(DOC),
                                         ("c", " male", {"audio": [str(tmp_path / "st.wav")]}),
                                         0, ("t", 0, 1))])
    r2 = tiny_lm.loglikelihood([Instance("loglikelihood", dict(DOC),
                                         ("c", " male", {"audio": [{"array": w, "sampling_rate": 16000}]}),
                                         0, ("t", 1, 1))])
    assert abs(float(r1[0][0]) - float(r2[0][0])) < 1e-3  # PCM_16 quantisation only
    r3 = tiny_lm.loglikelihood([Instance("loglikelihood", dict(DOC),
                                         ("c", " male", {"audio": [str(tmp_path / "m8k.wav")]}),
                                         0, ("t", 2, 1))])
    assert math.isfinite(float(r3[0][0]))


def test_use_cache_guard_refuses_mixed_model_args(tiny_qwen2_audio_dir, tmp_path):
    from lm_eval.api.model import CachingLM

    from audio_tasks.model import AudioLALM

    db = str(tmp_path / "cache.db")
    CachingLM(AudioLALM(pretrained=str(tiny_qwen2_audio_dir)), db)
    CachingLM(AudioLALM(pretrained=str(tiny_qwen2_audio_dir)), db)  # same args: fine
    steered = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), steer="enrich", source_layer=1, gap=2, alpha=0.5)
    with pytest.raises(ValueError, match="different model arguments"):
        CachingLM(steered, db)


def test_generate_until_greedy_matches_hf_generate(tiny_lm):
    w = make_waves(1)[0]
    req = Instance("generate_until", dict(DOC),
                   ("ctx", {"until": ["\n\n"], "max_gen_toks": 6}, {"audio": [{"array": w, "sampling_rate": 16000}]}),
                   0, ("t", 0, 1))
    out = tiny_lm.generate_until([req])[0]
    prompt = req.args[2]["rendered_prompt"]
    inp = tiny_lm.processor(text=[prompt], audio=[w], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        gen = tiny_lm.model.generate(**inp, max_new_tokens=6, do_sample=False)
    ref = tiny_lm.tokenizer.decode(gen[0, inp["input_ids"].shape[1]:], skip_special_tokens=True).split("\n\n")[0]
    assert out == ref


def test_long_clip_is_truncated_with_a_single_warning(caplog):
    """The embedded reference model's encoder window is 2 s: a 3-s clip is cut, and said so once."""
    from audio_tasks.model import AudioLALM

    lm = AudioLALM(device="cpu")
    assert lm.engine.audio_window_s == 2.0
    w = make_waves(1)[0]
    long = np.concatenate([w, w, w, w, w])[: 3 * 16000]
    reqs = [Instance("loglikelihood", dict(DOC), ("c", " male", {"audio": [{"array": long, "sampling_rate": 16000}]}),
                     0, ("t", i, 1)) for i in range(2)]
    with caplog.at_level("WARNING"):
        a = lm.loglikelihood(reqs)
    assert sum("longer than the encoder window" in r.message for r in caplog.records) == 1
    cut = [Instance("loglikelihood", dict(DOC),
                    ("c", " male", {"audio": [{"array": long[:32000], "sampling_rate": 16000}]}),
                    0, ("t", 9, 1))]
    assert abs(float(lm.loglikelihood(cut)[0][0]) - float(a[0][0])) < 1e-5


def test_apply_chat_template_path_renders_the_same_prompt(tiny_qwen2_audio_dir):
    """--apply_chat_template (lm-eval renders via AudioLALM.apply_chat_template, gen_prefix as an open
    assistant turn) gives exactly the prompt the default path renders from the doc."""
    from audio_tasks.model import AudioLALM

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir))
    default = lm.engine.render_chat(DOC["user_prompt"], assistant_prefix=DOC["assistant_prefix"])
    via_lm_eval = lm.apply_chat_template([{"role": "user", "content": DOC["user_prompt"]},
                                          {"role": "assistant", "content": DOC["assistant_prefix"]}],
                                         add_generation_prompt=False)
    assert via_lm_eval == default
    w = make_waves(1)[0]
    aux = {"audio": [{"array": w, "sampling_rate": 16000}]}
    chat = lm.loglikelihood([Instance("loglikelihood", {}, (via_lm_eval, " male", dict(aux)), 0, ("t", 0, 1))])
    lm2 = AudioLALM(pretrained=str(tiny_qwen2_audio_dir))
    plain = lm2.loglikelihood([Instance("loglikelihood", dict(DOC), ("ctx", " male", dict(aux)), 0, ("t", 0, 1))])
    assert abs(float(chat[0][0]) - float(plain[0][0])) < 1e-6


def test_second_prompt_for_a_known_clip_skips_feature_extraction(tiny_qwen2_audio_dir):
    from audio_tasks.model import AudioLALM

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir))
    e = lm.engine
    w = make_waves(1, seed=21)[0]
    a = e.tokenize(e.render_chat("What is the gender of the speaker in the speech?", assistant_prefix="It is"), [w])
    assert a.features is not None
    prompt_b = e.render_chat("", assistant_prefix="The speaker's gender is")
    b = e.tokenize(prompt_b, [w])
    assert b.features is None  # mel features not recomputed for a known clip
    ref = lm.processor(text=[prompt_b], audio=[w], sampling_rate=16000, return_tensors="pt")
    assert torch.equal(b.input_ids, ref["input_ids"][0])
    assert torch.equal(e.features(b)["input_features"], ref["input_features"])


def test_batch_size_auto_backs_off_on_out_of_memory_and_keeps_scores(tiny_qwen2_audio_dir, monkeypatch):
    """batch_size=auto: a batch that raises OutOfMemoryError is retried at half the size (the prefix KV
    cache is dropped too); the run completes with the same scores as batch 1."""
    import interventions.scoring as scoring
    from audio_tasks.model import AudioLALM

    waves = make_waves(5, seed=8)
    ref = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=1).loglikelihood(_requests(waves))
    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size="auto", max_batch_size=8)
    real, sizes, drops = scoring.score_items, [], []

    def limited(engine, items, intervention=None, **kw):
        sizes.append(len(items))
        if len(items) > 2:
            raise torch.OutOfMemoryError("simulated: batch too large")
        return real(engine, items, intervention, **kw)

    monkeypatch.setattr(scoring, "score_items", limited)
    monkeypatch.setattr(lm.engine, "drop_prefix_cache", lambda: drops.append(1))
    got = lm.loglikelihood(_requests(waves))
    assert sizes == [5, 4, 2, 2, 1]  # 5 docs at 8: OOM; at 4: OOM; then batches of 2, 2, 1
    assert lm.batch_size_per_gpu == 2 and len(drops) == 2
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(got, ref)) < 1e-4
