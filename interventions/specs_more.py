"""Specs of the LALM architectures added for issue #15 (listed in ``SPECS_MORE``, read by :mod:`interventions.specs`).

transformers-native: Audio Flamingo 3, Music Flamingo, Qwen3-Omni (MoE thinker), Granite Speech, Phi-4-multimodal
and Gemma 3n (all run, on tiny models: tests/test_specs_more.py).  What
"layer l" means is the same everywhere (docs/CONTRACTS.md): the residual stream after decoder block l of the
*text* decoder (for Qwen3-Omni: after the block's mixture-of-experts MLP).  Architecture-specific notes sit next
to each spec; the papers' own remote-code models are in :mod:`interventions.specs_remote`.
"""

from __future__ import annotations

import torch

from .arch_spec import ArchSpec, encode_pooled


def _encode_af3(model, feats, counts):
    """Audio Flamingo 3: Whisper-style tower over a 30-s window (padded frames masked), avg pooling, projector;
    the first ``((n - 1) // 2 + 1 - 2) // 2 + 1`` rows of clip i (what the processor expanded)."""
    return encode_pooled(model, {"input_features": feats["input_features"],
                                  "input_features_mask": feats["input_features_mask"]}, counts)


AUDIO_FLAMINGO3 = ArchSpec(
    name="audio_flamingo3",
    model_types=("audioflamingo3",),
    model_class="AudioFlamingo3ForConditionalGeneration",
    decoder="model.language_model",  # Qwen2Model; lm_head at the top
    processor_feature_keys=("input_features", "input_features_mask"),
    encode_audio=_encode_af3,
    # The processor cuts clips into 30-s windows (one feature row each); the engine gives each clip one
    # row, so clips are cut at 30 s.
    audio_window_s=30.0,
    # Its processor routes a text ``padding=`` to the feature extractor too: prepare one doc per call.
    encode_per_clip=True,
)


def _encode_music_flamingo(model, feats, counts):
    """Music Flamingo: as Audio Flamingo 3, plus rotary time embeddings whose timestamps the model rebuilds from
    the run of audio tokens in ``input_ids``; one clip (one 30-s window) at a time, so that run is the clip's
    own ``count`` placeholders."""
    n = int(counts[0])
    ids = torch.full((1, n), int(model.config.audio_token_id), dtype=torch.long, device=feats["input_features"].device)
    out = model.get_audio_features(feats["input_features"], feats["input_features_mask"], ids)
    return [out.pooler_output]


MUSIC_FLAMINGO = ArchSpec(
    name="music_flamingo",
    model_types=("musicflamingo",),
    model_class="MusicFlamingoForConditionalGeneration",
    decoder="model.language_model",  # Qwen2Model; lm_head at the top
    processor_feature_keys=("input_features", "input_features_mask"),
    encode_audio=_encode_music_flamingo,
    encode_per_clip=True,
    # Audio positions are the <sound> runs; the sound_bos / sound_eos tokens around them are text.
    audio_window_s=30.0,
)


def _encode_qwen3_omni(model, feats, counts):
    """Qwen3-Omni thinker: the audio tower takes each clip's unpadded mel frames (``feature_attention_mask``),
    encodes them in 100-frame chunks (13 tokens per full chunk) and returns one flat sequence."""
    return encode_pooled(model, {"input_features": feats["input_features"],
                                  "feature_attention_mask": feats["feature_attention_mask"]}, counts)


QWEN3_OMNI_MOE = ArchSpec(
    name="qwen3_omni_moe_thinker",
    # "qwen3_omni_moe": full Omni checkpoints; the thinker class loads their "thinker." weights.
    model_types=("qwen3_omni_moe_thinker", "qwen3_omni_moe"),
    model_class="Qwen3OmniMoeThinkerForConditionalGeneration",
    decoder="model.language_model",  # Qwen3OmniMoeThinkerTextModel: MoE blocks (mlp = router + experts)
    # Interleaved M-RoPE: given (B, T) positions the text model builds its 4 rows (text, t, h, w) from
    # them; for audio + text prompts the model's own position ids are that sequence in every row
    # (tests/test_specs_more.py checks it), so plain positions are exact.
    position_id_rows=1,
    encode_audio=_encode_qwen3_omni,
    # The feature extractor pads clips to the longest of a call: clips are encoded one at a time.
    encode_per_clip=True,
    audio_window_s=300.0,
)


def _encode_granite(model, feats, counts):
    """Granite Speech: conformer encoder + windowed Q-Former projector over each clip's stacked log-mel frames
    (the encoder has no padding mask, so clips are encoded one at a time); the projector's
    ``ceil(frames / 15) * 3`` outputs are the clip's audio embeddings."""
    out = model.get_audio_features(feats["input_features"]).pooler_output
    return [out[i, : int(n)] for i, n in enumerate(counts)]


GRANITE_SPEECH = ArchSpec(
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


def _encode_phi4(model, feats, counts):
    """Phi-4-multimodal ("speech" projection mode: audio without an image): conformer encoder over the clip's
    log-mel frames, then gelu(up_proj) and down_proj; the first ``audio_embed_sizes`` rows of each clip."""
    emb = model.model.embed_tokens_extend.audio_embed
    x = feats["audio_input_features"].to(emb.up_proj_for_speech.weight.dtype)
    h = emb.encoder(x, feats.get("audio_attention_mask"))
    h = emb.down_proj_for_speech(torch.nn.functional.gelu(emb.up_proj_for_speech(h)))
    return [h[i, : int(n)] for i, n in enumerate(counts)]


PHI4_MULTIMODAL = ArchSpec(
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


def _gemma3n_embed(model, ids):
    """Gemma 3n's own embedding of token ids (``Gemma3nModel.forward``): the text table scaled by sqrt(d), except
    ids in the vision range [vision offset, audio offset) and the audio range [audio offset, ...), which take the
    hard embeddings of ``embed_vision`` / ``embed_audio`` (the end-of-image / end-of-audio markers and the soft
    placeholders are such ids; the placeholders are then overwritten by the audio embeddings)."""
    inner = model.model
    emb = inner.language_model.embed_tokens(ids)
    for embedder, upper in ((inner.embed_vision, inner.embed_audio.vocab_offset), (inner.embed_audio, None)):
        lo = embedder.vocab_offset
        mask = (ids >= lo) if upper is None else (ids >= lo) & (ids < upper)
        if bool(mask.any()):
            dummy = lo + embedder.vocab_size - 1
            hard = embedder(input_ids=torch.where(mask, ids, torch.full_like(ids, dummy))).to(emb.dtype)
            emb = torch.where(mask.unsqueeze(-1), hard, emb)
    return emb


def _gemma3n_per_layer_inputs(model, ids):
    """Per-layer token embeddings of the decoder (``per_layer_inputs``), from the ids as the model computes them
    (ids past ``vocab_size_per_layer_input`` -- the vision / audio ranges, audio placeholders included -- read row
    0); the decoder adds its projection of the input embeddings itself."""
    return {"per_layer_inputs": model.model.language_model.get_per_layer_inputs(ids)}


def _gemma3n_unstack(model, h):
    """Gemma 3n's un-stacking of its AltUp streams before the final norm (``Gemma3nTextModel.forward``): stream 0
    as is, streams 1..K-1 through ``altup_unembed_projections`` rescaled to stream 0's RMS, then the mean."""
    lm = model.model.language_model
    target = torch.mean(h[0] ** 2, dim=-1, keepdim=True) ** 0.5
    streams = [h[0]]
    for i in range(1, h.shape[0]):
        proj = lm.altup_unembed_projections[i - 1](h[i]).to(h.dtype)
        mag = torch.sqrt(torch.mean(proj ** 2, dim=-1, keepdim=True).clamp(min=1e-5))
        streams.append(proj * target / mag)
    return torch.stack(streams).mean(0)


def _encode_gemma3n(model, feats, counts):
    """Gemma 3n: the conformer audio tower over the clip's mel frames (``input_features_mask``: valid frames), then
    ``embed_audio`` (soft-token path).  As the model's own forward: masked encoder frames and the rest of the
    clip's fixed run of placeholders (188 in the released checkpoints) take the hard embedding of the last
    vocabulary id.  One clip at a time (a call's clips are padded to the longest)."""
    inner = model.model
    out = inner.get_audio_features(feats["input_features"], ~feats["input_features_mask"].bool(), return_dict=True)
    emb, masked = out.pooler_output, out.audio_mel_mask
    pad = inner.embed_audio(input_ids=torch.tensor([[inner.vocab_size - 1]], dtype=torch.long, device=emb.device))
    emb = torch.where(masked.unsqueeze(-1), pad, emb)
    n = int(counts[0])
    if emb.shape[1] > n:
        raise RuntimeError(f"Gemma 3n audio tower gave {emb.shape[1]} embeddings for {n} placeholders")
    return [torch.cat([emb[0], pad[0].expand(n - emb.shape[1], -1)], 0)]


GEMMA3N = ArchSpec(
    name="gemma3n",
    model_types=("gemma3n",),  # google/gemma-3n-E2B-it, google/gemma-3n-E4B-it
    model_class="Gemma3nForConditionalGeneration",
    decoder="model.language_model",  # Gemma3nTextModel; lm_head (tied to embed_tokens) at the top
    processor_feature_keys=("input_features", "input_features_mask"),
    encode_audio=_encode_gemma3n,
    encode_per_clip=True,
    audio_window_s=30.0,  # the processor gives every clip the same 188 placeholders (a 30-s window)
    # AltUp: every block reads and returns altup_num_inputs stacked streams [K, B, T, d]; only the active one
    # (altup_active_idx, 0) goes through attention and MLP, the others are predicted / corrected from it.
    # "The residual stream after block l" is that active stream of block l's output: steering, enrich,
    # tracing's patches and every capture read and write it alone (the other streams stay as computed).
    residual_stream_attr="altup_active_idx",
    # The lens reads every hidden_states entry (all K streams) through the model's own un-stacking, then
    # the final norm, lm_head and the soft-capping: at layer L it is exactly the model's logits.
    lens_readout=_gemma3n_unstack,
    last_hidden_state_normed=False,  # hidden_states[-1] is the last block's stacked output, before un-stacking
    logit_softcap_attr="final_logit_softcapping",
    # Audio positions are the <audio_soft_token> runs; <start_of_audio> / <end_of_audio> around them are text
    # (the end marker, an id in the audio range, takes embed_audio's hard embedding, as in the model).
    token_embedder=_gemma3n_embed,
    # Per-layer inputs: the decoder adds a per-layer token embedding (from the ids) to its projection of the
    # input embeddings; audio positions carry the placeholder id there (row 0 of the table), as in the model.
    decoder_token_inputs=_gemma3n_per_layer_inputs,
    # The last num_kv_shared_layers blocks reuse the keys / values of an earlier block and cache none of their
    # own; attention weights (eager) are each block's own.  No stacked prefix KV cache.
    prefix_kv_cache=False,
    # The vision tower (timm's MobileNetV5) is never run on audio + text: not built, its weights not read.
    stub_sub_configs=("vision_config",),
)


SPECS_MORE = (AUDIO_FLAMINGO3, MUSIC_FLAMINGO, QWEN3_OMNI_MOE, GRANITE_SPEECH, PHI4_MULTIMODAL, GEMMA3N)
