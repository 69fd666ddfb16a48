"""The architectures of issue #15 end to end on their tiny offline models (2 layers; Gemma 3n: 4): scores equal
the model's own full forward, batched = unbatched, the four interventions equal hand references from the model's
own forward, lm-eval prints a results table, and ``python -m analysis lens / trace / heads`` run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import CLIPS, DOCS, MULTI, SINGLE, SR, full_forward_reference, tiny_requests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARCHS = ["audio_flamingo3", "music_flamingo", "qwen3_omni_moe", "granite_speech", "phi4_multimodal"]
# Where the text decoder's blocks are, written out here (not read from the specs under test).
DECODER = {"audio_flamingo3": "model.language_model", "music_flamingo": "model.language_model",
           "qwen3_omni_moe": "model.language_model",
           "granite_speech": "model.language_model", "phi4_multimodal": "model"}


def _get(obj, path):
    for p in path.split("."):
        obj = getattr(obj, p)
    return obj


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from audio_tasks.tiny import build

    root = tmp_path_factory.mktemp("tiny_more")
    return {a: build(a, root / a) for a in ARCHS}


@pytest.fixture(scope="module")
def lms(tiny_dirs):
    from audio_tasks.model import AudioLALM

    cache: dict = {}

    def get(arch: str, batch_size: int = 2):
        if (arch, batch_size) not in cache:
            cache[arch, batch_size] = AudioLALM(pretrained=str(tiny_dirs[arch]), device="cpu", batch_size=batch_size)
        return cache[arch, batch_size]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_match_full_forward_and_batched_equals_unbatched(lms, arch):
    lm = lms(arch, 2)
    reqs = tiny_requests(SINGLE + MULTI)
    res = lm.loglikelihood(reqs)
    ctx_ids, counts = {}, set()
    for r, (ll, greedy) in zip(reqs, res):
        prompt, wave = r.args[2]["rendered_prompt"], CLIPS[DOCS[r.doc_id][1]]
        if r.doc_id not in ctx_ids:
            ctx_ids[r.doc_id] = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR,
                                             return_tensors="pt")["input_ids"][0]
            counts.add(int((ctx_ids[r.doc_id] == lm.engine.audio_token_id).sum()))
        ref, ref_first, ref_greedy = full_forward_reference(lm, prompt, wave, r.args[1], ctx_ids[r.doc_id])
        assert abs(float(ll) - ref) < 1e-4, (arch, r.doc_id, r.args[1], float(ll), ref)
        assert abs(ll.first_token_logprob - ref_first) < 1e-4
        assert greedy == ref_greedy
    assert len(counts) == 2 and min(counts) > 0  # the two clips expand to different audio-token counts
    one = lms(arch, 1).loglikelihood(tiny_requests(SINGLE + MULTI))
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(one, res)) < 1e-4
    assert [a[1] for a in one] == [b[1] for b in res]


def _forward(lm, arch, prompt, wave, *, layer_hook=None, o_proj_hooks=None):
    """The model's own forward: block outputs, o_proj inputs at the last position, last logits."""
    inp = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR, return_tensors="pt")
    layers = _get(lm.model, DECODER[arch]).layers
    cap, hin, handles = {}, {}, []
    for l, layer in enumerate(layers, 1):
        handles.append(layer.register_forward_hook(
            lambda m, i, o, l=l: cap.__setitem__(l, (o[0] if isinstance(o, tuple) else o).detach().clone())))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a, l=l: hin.__setitem__(l, a[0][0, -1].detach().clone())))
    if layer_hook is not None:
        handles.append(layers[layer_hook[0] - 1].register_forward_hook(layer_hook[1]))
    for l, fn in (o_proj_hooks or {}).items():
        handles.append(layers[l - 1].self_attn.o_proj.register_forward_hook(fn))
    try:
        with torch.no_grad():
            logits = lm.model(**inp).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()
    return cap, hin, logits


def _add_last(vec):
    def fn(m, i, o):
        h = (o[0] if isinstance(o, tuple) else o).clone()
        h[0, -1] += vec
        return (h,) + tuple(o[1:]) if isinstance(o, tuple) else h
    return fn


@pytest.mark.parametrize("arch", ARCHS)
def test_four_interventions_match_hand_references(lms, arch):
    from interventions.scoring import MCItem, score_items
    from interventions.steering import Enrich, HeadSteer, LayerGuided

    lm = lms(arch, 2)
    e = lm.engine
    w = CLIPS[1]
    prompt = e.render_chat("What is the gender of the speaker?", assistant_prefix="The speaker's gender is")
    conts = [e.encode_text(" male"), e.encode_text(" female")]
    items = [MCItem(e.tokenize(prompt, [w]), conts, {"gold": 0})]
    ids = [c[0] for c in conts]
    sil = np.zeros_like(w)
    cap_a, hin_a, _ = _forward(lm, arch, prompt, w)
    cap_s, hin_s, _ = _forward(lm, arch, prompt, sil)
    L = len(cap_a)
    # layer_guided: alpha * sum_l w_l (h_audio[l] - h_silence[l]) added to the last block's output, last position
    weights, alpha = {1: 0.25, 2: 0.75}, 1.5
    d = sum(wt * (cap_a[l][0, -1] - cap_s[l][0, -1]) for l, wt in weights.items())
    _, _, ref_logits = _forward(lm, arch, prompt, w, layer_hook=(L, _add_last(alpha * d)))
    ref = torch.log_softmax(ref_logits, -1)[ids]
    got = score_items(e, items, LayerGuided(weights, alpha))[0]
    assert torch.allclose(torch.tensor(got.first), ref, atol=1e-5)
    # single_layer: the same with one layer, weight 1
    d1 = cap_a[1][0, -1] - cap_s[1][0, -1]
    _, _, ref_logits = _forward(lm, arch, prompt, w, layer_hook=(L, _add_last(0.5 * d1)))
    got = score_items(e, items, LayerGuided({1: 1.0}, 0.5, name="single_layer"))[0]
    assert torch.allclose(torch.tensor(got.first), torch.log_softmax(ref_logits, -1)[ids], atol=1e-5)
    # enrich (source 1, gap 1): h_2 <- h_2 + lam * h_1 at the last position, same pass
    _, _, ref_logits = _forward(lm, arch, prompt, w, layer_hook=(2, _add_last(0.7 * cap_a[1][0, -1])))
    got = score_items(e, items, Enrich(1, 0.7, 1))[0]
    assert torch.allclose(torch.tensor(got.first), torch.log_softmax(ref_logits, -1)[ids], atol=1e-5)
    # head steering: alpha * W_o[:, head] (z_audio - z_silence) added to o_proj's output, last position
    heads, alpha = [(1, 1), (2, 0), (2, 3)], 2.0
    D = lm.spec.head_dim(lm.model)
    layers = _get(lm.model, DECODER[arch]).layers
    adds: dict = {}
    for l, hh in heads:
        W = layers[l - 1].self_attn.o_proj.weight
        delta = hin_a[l][hh * D:(hh + 1) * D] - hin_s[l][hh * D:(hh + 1) * D]
        adds[l] = adds.get(l, 0) + alpha * (W[:, hh * D:(hh + 1) * D] @ delta)
    _, _, ref_logits = _forward(lm, arch, prompt, w, o_proj_hooks={l: _add_last(v) for l, v in adds.items()})
    ref = torch.log_softmax(ref_logits, -1)[ids]
    got = score_items(e, items, HeadSteer(heads, alpha))[0]
    assert torch.allclose(torch.tensor(got.first), ref, atol=1e-5)


def test_qwen3_omni_positions_equal_the_models_own(lms):
    """Plain (B, T) positions, expanded to 4 rows by the text model, are the model's own interleaved M-RoPE
    positions for audio + text prompts (left-padded batch of different lengths)."""
    lm = lms("qwen3_omni_moe", 2)
    e = lm.engine
    toks = [e.tokenize(e.render_chat("What is the gender?", assistant_prefix="The answer is"), [CLIPS[0]]),
            e.tokenize(e.render_chat("", assistant_prefix="The"), [CLIPS[1]])]
    prep = e.prepare(toks)
    assert prep.position_ids.shape == (2, prep.seq_len)
    lens = torch.cat([e.features(t)["feature_attention_mask"].sum(-1) for t in toks])
    pos = lm.model.model.get_rope_index(prep.input_ids, attention_mask=prep.attention_mask,
                                        audio_seqlens=lens)[0]
    real = prep.attention_mask.bool()
    assert pos.shape[0] == 3
    for r in range(3):
        assert torch.equal(pos[r][real], prep.position_ids[real])


@pytest.fixture(scope="module")
def sample_root():
    from tests.helpers import SAMPLE, sakura_tasks_available

    if not (SAMPLE / "data" / "Gender").is_dir() or not sakura_tasks_available():
        pytest.skip("SAKURA sample or the sakura_* lm-eval tasks are not available")
    return SAMPLE


def _lm_eval_table_and_analyses(m, sample_root, tmp_path, n_layers: int) -> None:
    """lm-eval (its Python API, in this process) scores sakura_gender --limit 4 and prints the results table;
    ``python -m analysis lens`` (with audio masking, ``n_layers`` + 1 rows), ``trace`` and ``heads`` run."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    from analysis import runner
    from audio_tasks.tasks import TASKS_DIR
    from tests.helpers import analysis_args

    res = simple_evaluate(model="audio_lalm", model_args=f"pretrained={m},batch_size=4",
                          tasks=["sakura_gender"], limit=4, metadata={"data_root": str(sample_root)},
                          task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                                                   metadata={"data_root": str(sample_root)}))
    table = make_table(res)
    print(table)
    assert "sakura_gender" in table and "acc" in table
    acc = res["results"]["sakura_gender"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    assert res["n-samples"]["sakura_gender"]["effective"] == 4
    assert runner.main(analysis_args("lens", m, tmp_path / "lens", "--batch_size", "4", limit=2)) == 0
    assert "sakura_gender" in json.loads((tmp_path / "lens" / "lens_summary.json").read_text())["tasks"]
    recs = [json.loads(x) for x in (tmp_path / "lens" / "lens_records.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    for r in recs:  # L + 1 rows; audio masking changes nothing at the embeddings and something at the top
        last, masked = np.array(r["logp"]["last"]), np.array(r["logp"]["masked_last"])
        assert last.shape == masked.shape == (n_layers + 1, 2) and np.all(np.isfinite(last))
        assert np.array_equal(last[0], masked[0]) and not np.allclose(last[-1], masked[-1], atol=1e-7)
    assert runner.main(analysis_args("trace", m, tmp_path / "trace", "--rows", "8", limit=2)) == 0
    assert (tmp_path / "trace" / "trace_summary.json").exists()
    assert runner.main(analysis_args("heads", m, tmp_path / "heads", "--batch_size", "4", "--K", "2", "--n_random", "2",
                                     limit=2)) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_lm_eval_results_table_and_analyses_run(tiny_dirs, sample_root, arch, tmp_path, capsys):
    """lm-eval prints the results table; ``python -m analysis lens`` (with audio masking), ``trace`` and ``heads``
    run on the same model (2 layers)."""
    _lm_eval_table_and_analyses(tiny_dirs[arch], sample_root, tmp_path, n_layers=2)


def test_tiny_cli_and_fresh_process_loading(tiny_dirs, tmp_path):
    """``python -m audio_tasks.tiny --arch granite_speech`` writes a model dir, and a fresh process loads it and
    the tiny Qwen3-Omni / Phi-4 dirs through ``load_model`` alone (the spec's processor_imports register the
    offline processor / feature-extractor classes their configs name)."""
    import subprocess
    import sys

    out = tmp_path / "granite"
    p = subprocess.run([sys.executable, "-m", "audio_tasks.tiny", "--arch", "granite_speech", "--out", str(out),
                        "--layers", "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"arch": "granite_speech", "vocab": "tiny",
                                                              "path": str(out)}
    code = ("import json, sys; from audio_tasks.model import load_model\n"
            "r = [load_model(d) for d in sys.argv[1:]]\n"
            "print(json.dumps([[s.name, type(p).__name__, type(getattr(p, 'audio_processor', None) or "
            "p.feature_extractor).__name__, s.num_layers(m)] for m, p, s in r]))")
    dirs = [str(out), str(tiny_dirs["qwen3_omni_moe"]), str(tiny_dirs["phi4_multimodal"])]
    p = subprocess.run([sys.executable, "-c", code, *dirs], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [
        ["granite_speech", "GraniteSpeechProcessor", "TinyGraniteSpeechFeatureExtractor", 1],
        ["qwen3_omni_moe_thinker", "TinyQwen3OmniMoeProcessor", "WhisperFeatureExtractor", 2],
        ["phi4_multimodal", "TinyPhi4MultimodalProcessor", "Phi4MultimodalFeatureExtractor", 2]]


# ---- Gemma 3n ---------------------------------------------------------------------------------------
# 4 blocks (sliding, global, sliding, global); blocks 3 and 4 reuse the KV of blocks 1 and 2.  Every block returns
# 4 stacked AltUp streams [K, B, T, d]; the hand references below read and write the active one (index from the
# model's own config), on the raw HF modules.


@pytest.fixture(scope="module")
def gemma3n(tmp_path_factory):
    from audio_tasks.model import AudioLALM
    from audio_tasks.tiny import build

    path = build("gemma3n", tmp_path_factory.mktemp("tiny_gemma3n") / "gemma3n")
    return {"path": path, 1: AudioLALM(pretrained=str(path), device="cpu", batch_size=1),
            2: AudioLALM(pretrained=str(path), device="cpu", batch_size=2)}


def _g3n_forward(lm, prompt, wave, *, adds=None, o_proj_adds=None, hidden_states=False):
    """The model's own forward: the active AltUp stream of every block's output and the o_proj inputs at the last
    position, the last position's logits; ``adds`` {block: vector added to its active stream at the last position},
    ``o_proj_adds`` {block: vector added to its o_proj output at the last position}."""
    inp = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR, return_tensors="pt")
    a = lm.model.config.text_config.altup_active_idx
    layers = lm.model.model.language_model.layers
    cap, hin, handles = {}, {}, []

    def add_block(vec):
        def fn(m, i, o):
            o = o.clone()
            o[a, 0, -1] += vec
            return o
        return fn

    for l, layer in enumerate(layers, 1):
        if l in (adds or {}):
            handles.append(layer.register_forward_hook(add_block(adds[l])))
        handles.append(layer.register_forward_hook(lambda m, i, o, l=l: cap.__setitem__(l, o[a].detach().clone())))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, args, l=l: hin.__setitem__(l, args[0][0, -1].detach().clone())))
    for l, vec in (o_proj_adds or {}).items():
        handles.append(layers[l - 1].self_attn.o_proj.register_forward_hook(_add_last(vec)))
    try:
        with torch.no_grad():
            out = lm.model(**inp, output_hidden_states=hidden_states)
    finally:
        for h in handles:
            h.remove()
    return cap, hin, out.logits[0, -1].float(), out


def test_gemma3n_scores_match_full_forward_and_batched_equals_unbatched(gemma3n):
    lm = gemma3n[2]
    cfg = lm.model.config
    reqs = tiny_requests(SINGLE + MULTI)
    res = lm.loglikelihood(reqs)
    ctx_ids, counts = {}, set()
    for r, (ll, greedy) in zip(reqs, res):
        prompt, wave = r.args[2]["rendered_prompt"], CLIPS[DOCS[r.doc_id][1]]
        if r.doc_id not in ctx_ids:
            ctx_ids[r.doc_id] = lm.processor(text=[prompt], audio=[wave], sampling_rate=SR,
                                             return_tensors="pt")["input_ids"][0]
            counts.add(int((ctx_ids[r.doc_id] == cfg.audio_token_id).sum()))
            assert int((ctx_ids[r.doc_id] == cfg.eoa_token_id).sum()) == 1  # the end-of-audio id (audio range)
        ref, ref_first, ref_greedy = full_forward_reference(lm, prompt, wave, r.args[1], ctx_ids[r.doc_id])
        assert abs(float(ll) - ref) < 1e-4, (r.doc_id, r.args[1], float(ll), ref)
        assert abs(ll.first_token_logprob - ref_first) < 1e-4
        assert greedy == ref_greedy
    assert counts == {188}  # Gemma 3n: every clip fills the same 188 placeholders
    one = gemma3n[1].loglikelihood(tiny_requests(SINGLE + MULTI))
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(one, res)) < 1e-4
    assert [a[1] for a in one] == [b[1] for b in res]
    # The soft-capping is not negligible on this model: the capped logits differ from lm_head's.
    inp = lm.processor(text=[reqs[0].args[2]["rendered_prompt"]], audio=[CLIPS[0]], sampling_rate=SR,
                       return_tensors="pt")
    with torch.no_grad():
        capped = lm.model(**inp).logits[0, -1]
        raw = lm.model.lm_head(lm.model.model(**inp).last_hidden_state)[0, -1]
    assert float((raw - capped).abs().max()) > 1e-2
    # The vision tower is an empty stand-in, and only while loading: AutoModel maps the vision config back after.
    from transformers import AutoModel
    from transformers.models.gemma3n.configuration_gemma3n import Gemma3nVisionConfig

    assert type(lm.model.model.vision_tower).__name__ == "UnusedGemma3nVisionConfigTower"
    assert not any(p.numel() for p in lm.model.model.vision_tower.parameters())
    assert Gemma3nVisionConfig not in AutoModel._model_mapping._extra_content


def test_gemma3n_interventions_match_hand_references(gemma3n):
    """layer_guided, single_layer, enrich and head steering on the active AltUp stream equal hand references from
    raw hooks on the HF modules (head steering on a global block and on a KV-shared block)."""
    from interventions.scoring import MCItem, score_items
    from interventions.steering import Enrich, HeadSteer, LayerGuided

    lm = gemma3n[2]
    e = lm.engine
    w = CLIPS[1]
    prompt = e.render_chat("What is the gender of the speaker?", assistant_prefix="The speaker's gender is")
    conts = [e.encode_text(" male"), e.encode_text(" female")]
    items = [MCItem(e.tokenize(prompt, [w]), conts, {"gold": 0})]
    ids = [c[0] for c in conts]
    cap_a, hin_a, base, _ = _g3n_forward(lm, prompt, w)
    cap_s, hin_s, _, _ = _g3n_forward(lm, prompt, np.zeros_like(w))
    L = len(cap_a)
    assert L == 4

    def check(got, ref_logits):
        ref = torch.log_softmax(ref_logits, -1)[ids]
        assert torch.allclose(torch.tensor(got.first), ref, atol=1e-5), (got.first, ref)
        assert not torch.allclose(ref, torch.log_softmax(base, -1)[ids], atol=1e-4)  # the edit changes the scores

    weights, alpha = {1: 0.25, 3: 0.75}, 1.5
    d = sum(wt * (cap_a[l][0, -1] - cap_s[l][0, -1]) for l, wt in weights.items())
    check(score_items(e, items, LayerGuided(weights, alpha))[0], _g3n_forward(lm, prompt, w, adds={L: alpha * d})[2])
    d1 = cap_a[2][0, -1] - cap_s[2][0, -1]
    check(score_items(e, items, LayerGuided({2: 1.0}, 0.5, name="single_layer"))[0],
          _g3n_forward(lm, prompt, w, adds={L: 0.5 * d1})[2])
    check(score_items(e, items, Enrich(1, 0.7, 1))[0], _g3n_forward(lm, prompt, w, adds={2: 0.7 * cap_a[1][0, -1]})[2])
    heads, alpha = [(1, 1), (2, 0), (3, 3), (4, 2)], 2.0
    D = lm.model.config.text_config.head_dim
    layers = lm.model.model.language_model.layers
    adds: dict = {}
    for l, hh in heads:
        W = layers[l - 1].self_attn.o_proj.weight
        delta = hin_a[l][hh * D:(hh + 1) * D] - hin_s[l][hh * D:(hh + 1) * D]
        adds[l] = adds.get(l, 0) + alpha * (W[:, hh * D:(hh + 1) * D] @ delta)
    check(score_items(e, items, HeadSteer(heads, alpha))[0], _g3n_forward(lm, prompt, w, o_proj_adds=adds)[2])


def test_gemma3n_lm_eval_results_table_lens_and_trace(gemma3n, sample_root, tmp_path):
    """lm-eval scores sakura_gender --limit 4 and prints the results table; ``python -m analysis lens`` (with audio
    masking, 5 rows: 4 blocks), ``trace`` and ``heads`` run."""
    _lm_eval_table_and_analyses(gemma3n["path"], sample_root, tmp_path, n_layers=4)


def test_gemma3n_lens_is_the_models_readout_of_every_layer(gemma3n):
    """Lens of layer l = the model's own un-stacking of block l's four streams (altup_unembed_projections, RMS
    matched to stream 0, mean), final norm, lm_head and soft-capping, written out here on the raw hidden_states;
    at the last layer that is the model's own logits."""
    from analysis.lens import lens_batch
    from interventions.scoring import MCItem

    lm = gemma3n[2]
    e = lm.engine
    w = CLIPS[0]
    prompt = e.render_chat("What is the gender of the speaker?", assistant_prefix="The speaker's gender is")
    conts = [e.encode_text(" male"), e.encode_text(" female")]
    got = lens_batch(e, [MCItem(e.tokenize(prompt, [w]), conts, {"gold": 0})], positions={"last": -1},
                     masked=False)[0].logp["last"]
    _, _, logits, out = _g3n_forward(lm, prompt, w, hidden_states=True)
    tm = lm.model.model.language_model
    cap = lm.model.config.text_config.final_logit_softcapping
    ids = [c[0] for c in conts]
    assert len(out.hidden_states) == 5 and out.hidden_states[1].shape[0] == 4
    for l, hs in enumerate(out.hidden_states):
        h = hs[:, 0, -1]  # (4 streams, d)
        rms0 = h[0].pow(2).mean().sqrt()
        proj = [tm.altup_unembed_projections[i - 1](h[i]) for i in range(1, 4)]
        streams = [h[0]] + [p * rms0 / p.pow(2).mean().clamp(min=1e-5).sqrt() for p in proj]
        with torch.no_grad():
            z = lm.model.lm_head(tm.norm(torch.stack(streams).mean(0)))
        ref = torch.log_softmax(cap * torch.tanh(z / cap), -1)[ids]
        assert np.allclose(got[l], ref.double().numpy(), atol=1e-5), (l, got[l], ref)
    assert np.allclose(got[-1], torch.log_softmax(logits, -1)[ids].double().numpy(), atol=1e-5)


def test_gemma3n_sliding_window_scores_head_steering_and_audio_masking(tmp_path):
    """A window (8) shorter than the prompt: scores equal the model's own forward, head steering (which runs twice
    on a cached context) equals its hand reference, and the lens's audio-masked pass equals the model's forward
    under hand-built masks (each sliding layer keeps its window, the last query sees no audio key)."""
    from analysis.lens import lens_batch
    from audio_tasks.model import AudioLALM
    from audio_tasks.tiny import build
    from interventions.scoring import MCItem, score_items
    from interventions.steering import HeadSteer

    lm = AudioLALM(pretrained=str(build("gemma3n", tmp_path / "g", sliding_window=8)), device="cpu", batch_size=1)
    e, W = lm.engine, 8
    w = CLIPS[1]
    prompt = e.render_chat("What is the gender of the speaker?", assistant_prefix="The speaker's gender is")
    conts = [e.encode_text(" male"), e.encode_text(" female"), e.encode_text(" male voice with many tokens")]
    items = [MCItem(e.tokenize(prompt, [w]), conts, {"gold": 0})]
    ids = [c[0] for c in conts[:2]]
    cap_a, hin_a, base, _ = _g3n_forward(lm, prompt, w)
    _, hin_s, _, _ = _g3n_forward(lm, prompt, np.zeros_like(w))
    ctx = lm.processor(text=[prompt], audio=[w], sampling_rate=SR, return_tensors="pt")["input_ids"][0]
    assert ctx.shape[0] > 4 * W
    got = score_items(e, items)[0]
    for c, text in enumerate([" male", " female", " male voice with many tokens"]):
        assert abs(got.loglik[c] - full_forward_reference(lm, prompt, w, text, ctx)[0]) < 1e-4
    heads, alpha, D = [(1, 1), (2, 0), (3, 3), (4, 2)], 2.0, lm.model.config.text_config.head_dim
    layers = lm.model.model.language_model.layers
    adds: dict = {}
    for l, hh in heads:
        Wo = layers[l - 1].self_attn.o_proj.weight
        adds[l] = adds.get(l, 0) + alpha * (Wo[:, hh * D:(hh + 1) * D] @ (hin_a[l] - hin_s[l])[hh * D:(hh + 1) * D])
    ref = torch.log_softmax(_g3n_forward(lm, prompt, w, o_proj_adds=adds)[2], -1)[ids]
    steered = score_items(e, [MCItem(items[0].tok, conts[:2], {"gold": 0})], HeadSteer(heads, alpha))[0]
    assert torch.allclose(torch.tensor(steered.first), ref, atol=1e-5)
    assert not torch.allclose(ref, torch.log_softmax(base, -1)[ids], atol=1e-4)
    # audio masking: the model's own forward with hand-built masks per layer type
    masked = lens_batch(e, [MCItem(items[0].tok, conts[:2], {"gold": 0})], positions={"last": -1})[0]
    inp = lm.processor(text=[prompt], audio=[w], sampling_rate=SR, return_tensors="pt")
    T = inp["input_ids"].shape[1]
    q, k = torch.arange(T)[:, None], torch.arange(T)[None, :]
    full = (k <= q).clone()
    full[-1] &= inp["input_ids"][0] != lm.model.config.audio_token_id
    masks = {"full_attention": full[None, None], "sliding_attention": (full & (q - k < W))[None, None]}
    with torch.no_grad():
        logits = lm.model(**{**inp, "attention_mask": masks}).logits[0, -1].float()
    assert np.allclose(masked.logp["masked_last"][-1], torch.log_softmax(logits, -1)[ids].double().numpy(), atol=1e-5)
    # without the window in the sliding layers the masked pass would differ
    wide = {"full_attention": full[None, None], "sliding_attention": full[None, None]}
    with torch.no_grad():
        logits_wide = lm.model(**{**inp, "attention_mask": wide}).logits[0, -1].float()
    assert not np.allclose(masked.logp["masked_last"][-1], torch.log_softmax(logits_wide, -1)[ids].double().numpy(),
                           atol=1e-5)


def test_gemma3n_tiny_cli_and_loading(tmp_path, capsys):
    """``python -m audio_tasks.tiny --arch gemma3n`` (its ``main``) writes a model dir that ``load_model`` loads
    from the files alone: the real Gemma3nProcessor, Gemma3nAudioFeatureExtractor and a PIL image processor (all
    transformers classes, no registration needed), the vision tower not built; a layer count the tiny model
    cannot have is refused before anything is built."""
    from audio_tasks.tiny import main
    from interventions.loader import load_model

    with pytest.raises(ValueError, match="layers=3.*even number >= 4"):
        main(["--arch", "gemma3n", "--out", str(tmp_path / "bad"), "--layers", "3"])
    assert not (tmp_path / "bad" / "config.json").exists()
    out = tmp_path / "g"
    assert main(["--arch", "gemma3n", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"arch": "gemma3n", "vocab": "tiny",
                                                                             "path": str(out)}
    m, p, s = load_model(str(out))
    assert [s.name, type(p).__name__, type(p.feature_extractor).__name__, type(p.image_processor).__name__,
            type(m.model.vision_tower).__name__, s.num_layers(m)] == [
        "gemma3n", "Gemma3nProcessor", "Gemma3nAudioFeatureExtractor", "SiglipImageProcessorPil",
        "UnusedGemma3nVisionConfigTower", 4]


def test_gemma3n_greedy_generation_equals_hf_generate(gemma3n):
    """Batched greedy generation (left padding, per-layer inputs of every new token) = transformers' own greedy
    ``generate`` on each prompt."""
    from interventions.generation import greedy_generate

    lm = gemma3n[2]
    e = lm.engine
    prompts = [e.render_chat("What is the gender of the speaker?", assistant_prefix="The"), e.render_chat("")]
    toks = [e.tokenize(p, [w]) for p, w in zip(prompts, CLIPS)]
    assert toks[0].input_ids.shape != toks[1].input_ids.shape
    gens = greedy_generate(e, toks, max_new_tokens=5, eos_token_ids=[-1])
    for g, p, w in zip(gens, prompts, CLIPS):
        inp = lm.processor(text=[p], audio=[w], sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            ref = lm.model.generate(**inp, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        assert g.ids == ref[0, inp["input_ids"].shape[1]:].tolist()
