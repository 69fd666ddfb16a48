"""Full-size architectures on the meta device (no memory): the published checkpoints' configs are
instantiated and every spec path, layer / head count, head size, o_proj head slice and the audio token id
are checked against the module tree and the config (values below are the published config.json values)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

WHISPER_LARGE_AUDIO = dict(num_mel_bins=128, max_source_positions=1500)

PUBLISHED = {
    "Qwen/Qwen2-Audio-7B-Instruct": dict(
        cls="Qwen2AudioConfig",
        cfg=dict(audio_config=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                                   **WHISPER_LARGE_AUDIO),
                 text_config=dict(model_type="qwen2", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=32, vocab_size=156032,
                                  max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                 audio_token_index=151646),
        expect=dict(layers=32, heads=32, kv=32, head_dim=128, hidden=4096, audio_id=151646, vocab=156032)),
    "mistralai/Voxtral-Mini-3B-2507": dict(
        cls="VoxtralConfig",
        cfg=dict(audio_config=dict(model_type="voxtral_encoder", hidden_size=1280, intermediate_size=5120,
                                   num_hidden_layers=32, num_attention_heads=20, **WHISPER_LARGE_AUDIO),
                 text_config=dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=30,
                                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=131072,
                                  max_position_embeddings=131072, rms_norm_eps=1e-5,
                                  rope_parameters={"rope_type": "default", "rope_theta": 100000000.0}),
                 audio_token_id=24),
        expect=dict(layers=30, heads=32, kv=8, head_dim=128, hidden=3072, audio_id=24, vocab=131072)),
    "mistralai/Voxtral-Small-24B-2507": dict(
        cls="VoxtralConfig",
        cfg=dict(audio_config=dict(model_type="voxtral_encoder", hidden_size=1280, intermediate_size=5120,
                                   num_hidden_layers=32, num_attention_heads=20, **WHISPER_LARGE_AUDIO),
                 text_config=dict(model_type="llama", hidden_size=5120, intermediate_size=32768, num_hidden_layers=40,
                                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=131072,
                                  max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                  rope_parameters={"rope_type": "default", "rope_theta": 100000000.0}),
                 audio_token_id=24),
        expect=dict(layers=40, heads=32, kv=8, head_dim=128, hidden=5120, audio_id=24, vocab=131072)),
    "Qwen/Qwen2.5-Omni-7B": dict(
        cls="Qwen2_5OmniConfig",
        cfg=dict(thinker_config=dict(
            audio_config=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                              n_window=100, output_dim=3584, **WHISPER_LARGE_AUDIO),
            vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                               fullatt_block_indexes=[7, 15, 23, 31]),
            text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                             num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                             rms_norm_eps=1e-6, tie_word_embeddings=False,
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                              "mrope_section": [16, 24, 24]}),
            audio_token_index=151646, image_token_index=151655, video_token_index=151656,
            audio_start_token_id=151647, audio_end_token_id=151648, vision_start_token_id=151652,
            vision_end_token_id=151653)),
        expect=dict(layers=28, heads=28, kv=4, head_dim=128, hidden=3584, audio_id=151646, vocab=152064)),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_spec_matches_full_size_model_on_meta_device(name):
    import transformers

    from interventions.specs import spec_for_config

    pub = PUBLISHED[name]
    config = getattr(transformers, pub["cls"])(**pub["cfg"])
    spec = spec_for_config(config)  # full Omni checkpoints (model_type qwen2_5_omni) map to the thinker spec
    model_cfg = getattr(config, "thinker_config", config)
    with torch.device("meta"):
        model = getattr(transformers, spec.model_class)(model_cfg)
    e = pub["expect"]
    tc = spec.text_cfg(model)
    assert spec.num_layers(model) == e["layers"] == len(spec.layer_modules(model))
    assert spec.num_heads(model) == e["heads"] and int(tc.num_key_value_heads) == e["kv"]
    assert spec.head_dim(model) == e["head_dim"]
    assert spec.hidden_size(model) == e["hidden"]
    assert spec.audio_token_id(model) == e["audio_id"]
    emb, unemb = spec.embed_module(model), spec.unembed_module(model)
    assert tuple(emb.weight.shape) == (e["vocab"], e["hidden"])
    assert tuple(unemb.weight.shape) == (e["vocab"], e["hidden"])
    assert emb.weight.is_meta
    norm = spec.norm_module(model)
    assert tuple(norm.weight.shape) == (e["hidden"],)
    for layer in (1, e["layers"]):
        attn = spec.attn_module(model, layer)
        o = spec.o_proj_module(model, layer)
        assert isinstance(o, torch.nn.Linear)
        # o_proj input = heads x head_dim, split into per-head slices of head_dim columns (Voxtral: 4096 != hidden)
        assert o.in_features == e["heads"] * e["head_dim"] and o.out_features == e["hidden"]
        assert attn.q_proj.out_features == e["heads"] * e["head_dim"]
        assert attn.k_proj.out_features == e["kv"] * e["head_dim"]
        h = e["heads"] - 1
        assert o.weight[:, h * e["head_dim"]:(h + 1) * e["head_dim"]].shape == (e["hidden"], e["head_dim"])
    assert spec.position_id_rows == (3 if "Omni" in name else 1)


def test_specs_import_nothing_from_audio_tasks():
    """interventions/specs.py imports nothing from audio_tasks, directly or through processor_imports
    (checked in a fresh interpreter: importing the specs must not pull any audio_tasks module in)."""
    import ast
    import json
    import subprocess
    import sys
    from pathlib import Path

    src = (Path(__file__).resolve().parent.parent / "interventions" / "specs.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("audio_tasks") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("audio_tasks")
    # (the installed start-up hook audio_tasks._startup may already be loaded: only new modules count)
    code = ("import json, sys; before = set(sys.modules); from interventions.specs import SPECS; "
            "print(json.dumps([sorted(m for m in set(sys.modules) - before if m.startswith('audio_tasks')), "
            "{n: list(s.processor_imports) for n, s in SPECS.items()}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    mods, imports = json.loads(out.stdout.strip().splitlines()[-1])
    assert mods == []
    assert {"qwen2_audio", "voxtral", "qwen2_5_omni_thinker"} <= set(imports)
    assert not any(m.startswith("audio_tasks") for ms in imports.values() for m in ms)
