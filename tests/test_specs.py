"""Architecture specs resolve on the tiny model of every registered architecture."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")



@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """{spec name: (model, processor, spec)} for every tiny builder, loaded through the one loading path."""
    from audio_tasks.model import load_model
    from audio_tasks.tiny import BUILDERS, build

    root = tmp_path_factory.mktemp("tiny_specs")
    out = {}
    for arch in BUILDERS:
        model, proc, spec = load_model(str(build(arch, root / arch)), device="cpu")
        assert spec.name not in out, f"two tiny builders map to spec {spec.name}"
        out[spec.name] = (model, proc, spec)
    return out


def _spec_names():
    from interventions.specs import SPECS

    return sorted(n for n, s in SPECS.items() if not s.not_run_reason)  # not-run specs: tests/test_specs_remote.py


def test_every_registered_spec_has_a_tiny_model(loaded):
    from interventions.specs import SPECS

    assert set(loaded) == {n for n, s in SPECS.items() if not s.not_run_reason}, \
        "add a builder to audio_tasks/tiny.py for every registered spec"


@pytest.mark.parametrize("name", _spec_names())
def test_paths_resolve(loaded, name):
    from interventions.specs import get_module

    model, proc, spec = loaded[name]
    assert type(model).__name__ == spec.model_class
    L, H, hd, d = spec.num_layers(model), spec.num_heads(model), spec.head_dim(model), spec.hidden_size(model)
    layers = spec.layer_modules(model)
    assert len(layers) == L > 0
    emb = spec.embed_module(model)
    assert isinstance(emb, torch.nn.Embedding) and emb.weight.shape[1] == d
    assert emb is model.get_input_embeddings()
    norm = spec.norm_module(model)
    assert isinstance(norm, torch.nn.Module) and tuple(norm.weight.shape) == (d,)
    unembed = spec.unembed_module(model)
    assert isinstance(unembed, torch.nn.Linear) and unembed.in_features == d
    assert unembed.out_features == emb.weight.shape[0]
    assert unembed is model.get_output_embeddings()
    for layer in range(1, L + 1):
        attn = spec.attn_module(model, layer)
        assert attn is get_module(layers[layer - 1], spec.attn)
        o = spec.o_proj_module(model, layer)
        assert isinstance(o, torch.nn.Linear)
        assert hd * H == o.in_features  # heads are contiguous slices of o_proj's input
        assert o.out_features == d


@pytest.mark.parametrize("name", _spec_names())
def test_audio_token_and_features(loaded, name):
    """The spec's audio token id is the processor's placeholder, and the processor output holds the
    feature keys the spec's encoder reads."""
    import numpy as np

    from interventions.engine import Engine

    model, proc, spec = loaded[name]
    tid = spec.audio_token_id(model)
    assert 0 <= tid < spec.embed_module(model).weight.shape[0]
    assert proc.tokenizer.convert_ids_to_tokens(tid) == proc.audio_token
    eng = Engine(model, proc, spec)
    tok = eng.tokenize(eng.render_chat("Hi", n_audio=1), [np.zeros(8000, dtype=np.float32)])
    assert int((tok.input_ids == tid).sum()) > 0
    assert set(tok.features) == set(spec.processor_feature_keys)
    for mod in spec.processor_imports:
        __import__(mod)


@pytest.mark.parametrize("name", _spec_names())
def test_last_hidden_state_normed_flag(loaded, name):
    model, _, spec = loaded[name]
    x = torch.randn(1, 5, spec.hidden_size(model))
    with torch.no_grad():
        out = spec.decoder_module(model)(inputs_embeds=x, output_hidden_states=True, return_dict=True)
    assert len(out.hidden_states) == spec.num_layers(model) + 1
    assert torch.allclose(out.hidden_states[-1], out.last_hidden_state) == spec.last_hidden_state_normed


def test_unknown_model_type_is_a_clear_error():
    from interventions.specs import SPECS, spec_for_config

    with pytest.raises(ValueError) as e:
        spec_for_config(SimpleNamespace(model_type="llama"))
    msg = str(e.value)
    assert "unsupported architecture" in msg and "'llama'" in msg
    for spec in SPECS.values():
        for mt in spec.model_types:
            assert mt in msg  # the error lists what is supported
    with pytest.raises(ValueError, match="model_type=None"):
        spec_for_config(SimpleNamespace())


def test_qwen2_audio_encoder_cut_window_equals_the_models_own_audio_embeddings(tiny_qwen2_audio_dir):
    """The Qwen2-Audio spec runs the tower only up to the longest clip (+ margin), not the 30-s window;
    the embeddings must equal what the model's own forward puts at the audio positions, for clips of
    very different lengths batched together (0.6 s ... 29 s, and silence)."""
    import numpy as np

    from audio_tasks.model import AudioLALM
    from tests.helpers import make_waves

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=1)
    e = lm.engine
    rng = np.random.default_rng(3)
    waves = make_waves(3, seed=4) + [(0.1 * rng.standard_normal(16000 * 29)).astype(np.float32),
                                     np.zeros(16000 * 3, np.float32)]
    prompt = e.render_chat("Describe the audio.", assistant_prefix="It is")
    toks = [e.tokenize(prompt, [w]) for w in waves]
    frames = []
    h = lm.model.model.audio_tower.conv1.register_forward_pre_hook(lambda m, a: frames.append(a[0].shape[-1]))
    try:
        short = e.audio_embeddings(toks[:3])  # batch of short clips
        e.clear_caches()
        mixed = e.audio_embeddings(toks)  # the same clips batched with a 29-s one
    finally:
        h.remove()
    assert frames[0] < 200 and frames[1] < 3000  # the window was cut (0.6-1.1 s clips: ~110 mel frames)
    for i, w in enumerate(waves):
        inp = lm.processor(text=[prompt], audio=[w], sampling_rate=16000, return_tensors="pt")
        cap = {}
        hk = lm.model.model.language_model.register_forward_pre_hook(
            lambda m, a, k: cap.__setitem__("emb", k["inputs_embeds"]), with_kwargs=True)
        try:
            with torch.no_grad():
                lm.model(**inp)
        finally:
            hk.remove()
        ref = cap["emb"][0][inp["input_ids"][0] == e.audio_token_id]
        assert mixed[i][0].shape == ref.shape
        assert torch.allclose(mixed[i][0], ref, atol=1e-5)
        if i < 3:
            assert torch.allclose(short[i][0], ref, atol=1e-5)
