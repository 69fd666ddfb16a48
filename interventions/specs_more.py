"""Specs of the LALM architectures added for issue #15 (registered from :mod:`interventions.specs`).

transformers-native: Audio Flamingo 3, Music Flamingo, Qwen3-Omni (MoE thinker), Granite Speech, Phi-4-multimodal
(all run, on tiny models: tests/test_more_archs.py) and Gemma 3n (registered, not run: see its spec).  What
"layer l" means is the same everywhere (docs/CONTRACTS.md): the residual stream after decoder block l of the
*text* decoder (for Qwen3-Omni: after the block's mixture-of-experts MLP).  Architecture-specific notes sit next
to each spec; the papers' own remote-code models are in :mod:`interventions.specs_remote`.
"""

from __future__ import annotations

import torch

from .specs import ArchSpec, _encode_pooled, register_spec


def _encode_af3(model, feats, counts):
    """Audio Flamingo 3: Whisper-style tower over a 30-s window (padded frames masked), avg pooling, projector;
    the first ``((n - 1) // 2 + 1 - 2) // 2 + 1`` rows of clip i (what the processor expanded)."""
    return _encode_pooled(model, {"input_features": feats["input_features"],
                                  "input_features_mask": feats["input_features_mask"]}, counts)


AUDIO_FLAMINGO3 = register_spec(
    ArchSpec(
        name="audio_flamingo3",
        model_types=("audioflamingo3",),
        model_class="AudioFlamingo3ForConditionalGeneration",
        decoder="model.language_model",  # Qwen2Model; lm_head at the top
        processor_feature_keys=("input_features", "input_features_mask"),
        encode_audio=_encode_af3,
        # The processor cuts clips into 30-s windows (one feature row each); the engine gives each clip one
        # row, so clips are cut at 30 s.
        extra={"audio_window_s": 30.0},
        # Its processor routes a text ``padding=`` to the feature extractor too: prepare one doc per call.
        encode_per_clip=True,
    )
)


def _encode_music_flamingo(model, feats, counts):
    """Music Flamingo: as Audio Flamingo 3, plus rotary time embeddings whose timestamps the model rebuilds from
    the run of audio tokens in ``input_ids``; one clip (one 30-s window) at a time, so that run is the clip's
    own ``count`` placeholders."""
    n = int(counts[0])
    ids = torch.full((1, n), int(model.config.audio_token_id), dtype=torch.long, device=feats["input_features"].device)
    out = model.get_audio_features(feats["input_features"], feats["input_features_mask"], ids)
    return [out.pooler_output]


MUSIC_FLAMINGO = register_spec(
    ArchSpec(
        name="music_flamingo",
        model_types=("musicflamingo",),
        model_class="MusicFlamingoForConditionalGeneration",
        decoder="model.language_model",  # Qwen2Model; lm_head at the top
        processor_feature_keys=("input_features", "input_features_mask"),
        encode_audio=_encode_music_flamingo,
        encode_per_clip=True,
        # Audio positions are the <sound> runs; the sound_bos / sound_eos tokens around them are text.
        extra={"audio_window_s": 30.0},
    )
)


def _encode_qwen3_omni(model, feats, counts):
    """Qwen3-Omni thinker: the audio tower takes each clip's unpadded mel frames (``feature_attention_mask``),
    encodes them in 100-frame chunks (13 tokens per full chunk) and returns one flat sequence."""
    return _encode_pooled(model, {"input_features": feats["input_features"],
                                  "feature_attention_mask": feats["feature_attention_mask"]}, counts)


QWEN3_OMNI_MOE = register_spec(
    ArchSpec(
        name="qwen3_omni_moe_thinker",
        # "qwen3_omni_moe": full Omni checkpoints; the thinker class loads their "thinker." weights.
        model_types=("qwen3_omni_moe_thinker", "qwen3_omni_moe"),
        model_class="Qwen3OmniMoeThinkerForConditionalGeneration",
        decoder="model.language_model",  # Qwen3OmniMoeThinkerTextModel: MoE blocks (mlp = router + experts)
        # Interleaved M-RoPE: given (B, T) positions the text model builds its 4 rows (text, t, h, w) from
        # them; for audio + text prompts the model's own position ids are that sequence in every row
        # (tests/test_more_archs.py checks it), so plain positions are exact.
        position_id_rows=1,
        encode_audio=_encode_qwen3_omni,
        # The feature extractor pads clips to the longest of a call: clips are encoded one at a time.
        encode_per_clip=True,
        extra={"audio_window_s": 300.0},
    )
)


def _encode_granite(model, feats, counts):
    """Granite Speech: conformer encoder + windowed Q-Former projector over each clip's stacked log-mel frames
    (the encoder has no padding mask, so clips are encoded one at a time); the projector's
    ``ceil(frames / 15) * 3`` outputs are the clip's audio embeddings."""
    out = model.get_audio_features(feats["input_features"]).pooler_output
    return [out[i, : int(n)] for i, n in enumerate(counts)]


GRANITE_SPEECH = register_spec(
    ArchSpec(
        name="granite_speech",
        model_types=("granite_speech",),
        model_class="GraniteSpeechForConditionalGeneration",
        decoder="model.language_model",  # GraniteModel (scales inputs_embeds by embedding_multiplier itself)
        audio_token_attrs=("audio_token_id", "audio_token_index"),
        processor_feature_keys=("input_features", "input_features_mask"),
        encode_audio=_encode_granite,
        encode_per_clip=True,
        # No logit scaling: GraniteSpeechForConditionalGeneration's own forward returns lm_head(h), without the
        # division by text_config.logits_scaling that GraniteForCausalLM applies; scores follow the model's forward.
        # Real checkpoints carry a LoRA adapter on the decoder's attention projections (loaded by peft, active
        # after loading; the model's generate() turns it off only for text-only input): our passes always have
        # audio (or its silence), so with peft installed "layer l" is block l *with* the adapter, as in the
        # model's own forward with audio.  Not tested here (no peft, no adapter).
    )
)


def _encode_phi4(model, feats, counts):
    """Phi-4-multimodal ("speech" projection mode: audio without an image): conformer encoder over the clip's
    log-mel frames, then gelu(up_proj) and down_proj; the first ``audio_embed_sizes`` rows of each clip."""
    emb = model.model.embed_tokens_extend.audio_embed
    x = feats["audio_input_features"].to(emb.up_proj_for_speech.weight.dtype)
    h = emb.encoder(x, feats.get("audio_attention_mask"))
    h = emb.down_proj_for_speech(torch.nn.functional.gelu(emb.up_proj_for_speech(h)))
    return [h[i, : int(n)] for i, n in enumerate(counts)]


PHI4_MULTIMODAL = register_spec(
    ArchSpec(
        name="phi4_multimodal",
        model_types=("phi4_multimodal",),
        model_class="Phi4MultimodalForCausalLM",
        decoder="model",  # Phi4MultimodalModel: embed_tokens, layers (fused qkv_proj + o_proj), norm
        text_config="",  # flat config: the text model's fields sit on the top-level config
        audio_token_attrs=("audio_token_id",),
        audio_token_from="audio_config",
        processor_feature_keys=("audio_input_features",),
        encode_audio=_encode_phi4,
        encode_per_clip=True,
        # The released checkpoint's speech LoRA (on qkv_proj / o_proj and the MLP) is a separate peft adapter
        # that the user loads and activates for audio; "layer l" is then block l with whatever adapter is
        # active in the loaded model, as in its own forward.  Not tested here (no peft, no adapter).
    )
)


GEMMA3N = register_spec(
    ArchSpec(
        name="gemma3n",
        model_types=("gemma3n",),  # google/gemma-3n-E2B-it, google/gemma-3n-E4B-it
        model_class="Gemma3nForConditionalGeneration",
        decoder="model.language_model",  # Gemma3nTextModel; lm_head at the top
        # Audio: the processor's <audio_soft_token> run (188 per clip), filled by the conformer audio tower +
        # Gemma3nMultimodalEmbedder.
        not_run_reason=(
            "spec written from transformers' modeling code, not run here: the engine does not yet support "
            "Gemma 3n's AltUp (every decoder block reads and returns altup_num_inputs stacked residual streams, "
            "so 'the residual stream after block l' needs a choice of stream), its per-layer token embeddings "
            "(per_layer_inputs, computed from the token ids next to inputs_embeds) or its final logit "
            "soft-capping; and the tiny model cannot be built here (its vision tower needs timm)"),
    )
)


from . import specs_remote  # noqa: E402,F401  (the papers' own models: written from published code, not run)
