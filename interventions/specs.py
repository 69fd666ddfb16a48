"""Architecture specs: one small declarative record per LALM architecture.

Everything that hooks into a model (scoring, interventions, analyses) reads these records and
never hard-codes module paths.  In the spirit of pyvene's per-architecture mappings, a spec names

* the class that loads the checkpoint,
* where the text decoder lives, and inside it the decoder layers, the final norm and the token
  embedding; where the unembedding (LM head) lives,
* the attention module of a layer and its output projection, the head count and head size
  (read from the text config),
* how audio positions are found (the audio placeholder token id, read from the config),
* how audio is turned into the embeddings that fill those positions (``encode_audio``),
* whether transformers returns the last ``hidden_states`` entry already normed (it does in 5.x),
* how many rows the rotary position ids have (3 for M-RoPE models),
* for decoders that are more than embeddings -> blocks -> norm -> LM head (Gemma 3n): which of a block's
  stacked streams is the residual stream, how the lens un-stacks them, the logit soft-capping, how ids are
  embedded and which decoder inputs are read from the ids (``interventions.arch_extras`` applies them).

Adding an architecture = one ``ArchSpec`` (listed in ``SPECS`` below, or in ``specs_more.SPECS_MORE``) + its tiny
builder + one test.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from . import specs_more, specs_remote
from .arch_spec import _MEL_MARGIN, ArchSpec, AudioEncoder, encode_pooled, get_module

__all__ = ["ArchSpec", "AudioEncoder", "SPECS", "spec_for_config", "get_module", "encode_pooled",
           "_MEL_MARGIN"]


# ---- audio encoders (how audio features become placeholder embeddings) -----------------


def _encode_qwen2_audio(model: torch.nn.Module, feats: dict[str, torch.Tensor], counts: Sequence[int],
                        ) -> list[torch.Tensor]:
    """Qwen2-Audio: Whisper-style tower, projector, then the first ``audio_output_lengths[i]`` rows
    of clip i (what the processor expanded).

    The stock tower always runs the full 30-s window (3000 mel frames), but it masks the padded
    frames as attention keys, so frames past the longest clip of the batch only matter through the
    two convolutions' receptive field (two mel frames).  The window is therefore cut after the
    longest clip plus a margin of ``_MEL_MARGIN`` frames, and the tower's own modules are run on it:
    the same embeddings as the stock forward (tests compare scores with the model's own forward),
    at about clip-length / 30 s of the encoder cost.
    """
    inner = model.model
    tower: Any = inner.audio_tower  # the Qwen2-Audio encoder (Module.__getattr__ types it "Tensor | Module")
    x = feats["input_features"].to(tower.device, tower.dtype)
    fmask = feats["feature_attention_mask"].to(tower.device)
    n_mel = fmask.sum(-1)
    _, out_len = tower._get_feat_extract_output_lengths(n_mel)
    x = x[..., : min(int(x.shape[-1]), int(n_mel.max()) + _MEL_MARGIN)]
    h = torch.nn.functional.gelu(tower.conv1(x))
    h = torch.nn.functional.gelu(tower.conv2(h)).permute(0, 2, 1)
    T = h.shape[1]
    h = h + tower.embed_positions.weight[:T].to(h.dtype)
    # Attention mask of the encoder over its (conv-downsampled) frames.
    feat_len = (n_mel - 1) // 2 + 1
    keep = torch.arange(T, device=x.device)[None, :] < feat_len[:, None]
    from transformers.masking_utils import create_bidirectional_mask

    dummy = torch.zeros((x.shape[0], T, 1), dtype=tower.dtype, device=x.device)
    amask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=keep.long())
    for layer in tower.layers:
        out = layer(h, amask)
        h = out[0] if isinstance(out, tuple) else out
    h = tower.avg_pooler(h.permute(0, 2, 1)).permute(0, 2, 1)
    proj = inner.multi_modal_projector(tower.layer_norm(h))
    return [proj[i, : int(out_len[i])] for i in range(proj.shape[0])]


QWEN2_AUDIO = ArchSpec(
    name="qwen2_audio",
    model_types=("qwen2_audio",),
    model_class="Qwen2AudioForConditionalGeneration",
    decoder="model.language_model",
    encode_audio=_encode_qwen2_audio,
)

def _encode_voxtral(model: torch.nn.Module, feats: dict[str, torch.Tensor], counts: Sequence[int],
                    ) -> list[torch.Tensor]:
    """Voxtral: Whisper-style encoder over fixed 30-s mel windows (3000 frames, one row per window),
    encoder frames reshaped 4-to-1 (``audio_config.intermediate_size = 4 * d_model``) and projected:
    375 embeddings per window.  No feature mask: padding is encoded as the model itself does."""
    return encode_pooled(model, {"input_features": feats["input_features"]}, counts)


def _encode_qwen2_5_omni(model: torch.nn.Module, feats: dict[str, torch.Tensor], counts: Sequence[int],
                         ) -> list[torch.Tensor]:
    """Qwen2.5-Omni thinker: the audio tower takes the unpadded mel frames of every clip (from
    ``feature_attention_mask``), encodes them in 2-s windows and returns one flat sequence of
    ``((n - 1) // 2 + 1 - 2) // 2 + 1`` embeddings per clip (what the processor expanded)."""
    return encode_pooled(model, {"input_features": feats["input_features"],
                                  "feature_attention_mask": feats["feature_attention_mask"]}, counts)


VOXTRAL = ArchSpec(
    name="voxtral",
    model_types=("voxtral",),
    model_class="VoxtralForConditionalGeneration",
    decoder="model.language_model",  # LlamaModel; lm_head at the top
    processor_feature_keys=("input_features",),
    encode_audio=_encode_voxtral,
    # No cut (0): audio longer than 30 s is split into several 30-s windows (375 tokens each) as the real
    # processor (mistral-common) splits it; the engine gives each clip its rows of windows.
    audio_window_s=0.0,
)

QWEN2_5_OMNI = ArchSpec(
    name="qwen2_5_omni_thinker",
    # "qwen2_5_omni": full Omni checkpoints; the thinker class loads their "thinker." weights.
    model_types=("qwen2_5_omni_thinker", "qwen2_5_omni"),
    model_class="Qwen2_5OmniThinkerForConditionalGeneration",
    decoder="model.language_model",  # Qwen2_5OmniThinkerTextModel; lm_head at the top
    # M-RoPE: for audio+text prompts the model's own get_rope_index gives the same sequential
    # positions in all three rows (tests/test_tiny.py checks it).
    position_id_rows=3,
    encode_audio=_encode_qwen2_5_omni,
    audio_window_s=30.0,  # the feature extractor keeps at most 30 s (3000 frames)
)


# Every architecture, by name: the three above, issue #15's transformers-native models and the papers' own.
SPECS: dict[str, ArchSpec] = {s.name: s for s in (QWEN2_AUDIO, VOXTRAL, QWEN2_5_OMNI, *specs_more.SPECS_MORE,
                                                  *specs_remote.SPECS_REMOTE)}


def spec_for_config(config: Any) -> ArchSpec:
    """Return the architecture spec matching ``config.model_type``; ValueError if unsupported."""
    mt = getattr(config, "model_type", None)
    for spec in SPECS.values():
        if mt in spec.model_types:
            return spec
    raise ValueError(
        f"unsupported architecture model_type={mt!r}; supported: "
        + ", ".join(sorted(t for s in SPECS.values() for t in s.model_types))
    )
