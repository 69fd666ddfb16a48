"""The architecture-spec record (:class:`ArchSpec`), and the helpers every spec module shares.

The specs themselves live in :mod:`interventions.specs` (Qwen2-Audio, Voxtral, Qwen2.5-Omni thinker),
:mod:`interventions.specs_more` (issue #15's transformers-native models) and :mod:`interventions.specs_remote`
(the papers' own models); ``interventions.specs.SPECS`` lists all of them.  This module imports none
of them, so the spec modules depend on it and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

__all__ = ["ArchSpec", "AudioEncoder", "get_module", "encode_pooled"]

def get_module(root: torch.nn.Module, path: str) -> Any:
    """Resolve a dotted attribute path ("model.language_model.layers") from ``root``."""
    obj: Any = root
    for part in path.split("."):
        if part:
            obj = getattr(obj, part)
    return obj


def _first_attr(cfg: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    raise AttributeError(f"none of {names} found on {type(cfg).__name__}")


# ``encode_audio(model, feats, counts)``: the processor features of some clips (batch dim = clips, on the model's
# device) and each clip's audio-placeholder count -> one ``(counts[i], d)`` embedding tensor per clip.
AudioEncoder = Callable[[torch.nn.Module, dict[str, torch.Tensor], Sequence[int]], list[torch.Tensor]]


@dataclass(frozen=True)
class ArchSpec:
    """Where things are in one LALM architecture (paths are relative to the loaded model)."""

    name: str
    model_types: tuple[str, ...]
    model_class: str  # transformers class name used by from_pretrained
    decoder: str  # text decoder (has embed_tokens, layers, norm)
    unembed: str = "lm_head"
    layers: str = "layers"
    norm: str = "norm"
    embed: str = "embed_tokens"
    attn: str = "self_attn"
    o_proj: str = "o_proj"
    text_config: str = "text_config"
    audio_token_attrs: tuple[str, ...] = ("audio_token_id", "audio_token_index")
    audio_token_from: str = ""  # sub-config holding the audio token id ("": the top-level config)
    last_hidden_state_normed: bool = True
    position_id_rows: int = 1  # 3 for M-RoPE (the three rows are equal for audio+text inputs)
    processor_feature_keys: tuple[str, ...] = ("input_features", "feature_attention_mask")
    encode_audio: AudioEncoder | None = None
    # Modules to import before the processor is loaded: they register (with transformers' Auto classes)
    # processor classes that a checkpoint's processor_config.json may name.  Data only: the loader imports
    # them, this module never does.  (The tiny fixture processors are found by the loader itself.)
    processor_imports: tuple[str, ...] = ()
    # Process each doc with its own processor call (the processor pads a call's clips to a common length that
    # the encoder does not mask, feature shapes differ between clips, or it routes text padding to the
    # feature extractor): the input pipeline then never batches processor calls.  (The engine encodes every
    # clip on its own anyway, so a clip's embedding never depends on its batch.)
    encode_per_clip: bool = False
    # The checkpoint's own code defines the model (loading needs trust_remote_code=True, which stays off
    # by default).
    remote_code: bool = False
    # Set when the spec is written from the published code but cannot be run here: loading stops with
    # this reason before any weights are read.
    not_run_reason: str | None = None
    # Seconds of audio the encoder sees per clip (longer clips are cut); None: the feature extractor's
    # ``chunk_length`` (30 s for Whisper-style extractors); 0: no cut (the processor windows long audio).
    audio_window_s: float | None = None
    # A minimal prompt holding one audio placeholder, used to get one clip's features and placeholder count;
    # None: the model's chat template rendered with one audio item and no text.
    audio_prompt: str | None = None
    # Remote-code models whose audio positions cannot be read from placeholder tokens: a rule
    # ``(input_ids, config) -> bool mask`` written from the published code, and the names of the config
    # attributes it reads (role -> attribute name, e.g. {"prompt_size": "prompt_size"}).
    audio_positions: Callable[..., Any] | None = None
    config_attrs: dict[str, str] = field(default_factory=dict)
    # ---- decoders that are more than "embeddings -> blocks -> norm -> lm_head" (Gemma 3n; interventions.arch_extras)
    # Text-config attribute holding the index of "the residual stream" when a block returns several stacked
    # streams ([K, B, T, d], Gemma 3n's AltUp: "altup_active_idx"); "": a block returns the residual stream itself.
    residual_stream_attr: str = ""
    # (model, stacked streams [K, ..., d]) -> one pre-norm state [..., d]: how the model un-stacks its streams
    # before the final norm; the lens applies it to every ``hidden_states`` entry.  None: entries are states.
    lens_readout: Callable[..., Any] | None = None
    # Text-config attribute of the final logit soft-capping (logits = c * tanh(logits / c)); "": none.
    logit_softcap_attr: str = ""
    # (model, input_ids) -> embeddings, when the decoder's ``embed_tokens`` alone is not how the model embeds ids
    # (Gemma 3n: ids in the vision / audio ranges take the multimodal embedders' hard embeddings); see embed_ids.
    token_embedder: Callable[..., Any] | None = None
    # (model, input_ids) -> extra decoder keyword inputs computed from the token ids of the positions run
    # (Gemma 3n: ``per_layer_inputs``); the engine passes the ids of every pass to it.
    decoder_token_inputs: Callable[..., Any] | None = None
    # Whether the engine may reuse a stacked per-layer KV cache of a shared audio prefix (prepare_split); False
    # when some layers keep no KV of their own (Gemma 3n's KV-shared layers) or crop it (sliding windows).
    prefix_kv_cache: bool = True
    # Sub-configs (e.g. "vision_config") whose tower the loader builds as an empty stand-in: audio-only use never
    # runs it, and its weights are not read (Gemma 3n's vision tower would need timm).
    stub_sub_configs: tuple[str, ...] = ()
    # Deprecated (untyped): only the keys of the typed fields ``audio_window_s`` / ``audio_prompt`` are accepted; they
    # fill those fields, and the typed values are mirrored here for code that still reads ``extra[...]``.  No spec
    # sets it; read the typed fields.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        typed = ("audio_window_s", "audio_prompt")
        unknown = sorted(set(self.extra) - set(typed))
        if unknown:
            raise ValueError(f"ArchSpec {self.name!r}: unknown extra key(s) {unknown}; use the typed fields "
                             f"{', '.join(typed)}")
        for k, v in self.extra.items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)
        self.extra.update({k: getattr(self, k) for k in typed if getattr(self, k) is not None})

    # ---- derived accessors -------------------------------------------------------------
    def text_cfg(self, model: torch.nn.Module) -> Any:
        """The text decoder's config (``text_config == ""``: the top-level config, for flat configs)."""
        return getattr(model.config, self.text_config) if self.text_config else model.config

    def decoder_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return get_module(model, self.decoder)

    def layer_modules(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        return list(get_module(self.decoder_module(model), self.layers))

    def norm_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return get_module(self.decoder_module(model), self.norm)

    def embed_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return get_module(self.decoder_module(model), self.embed)

    def embed_ids(self, model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of token ids as the model computes them (``token_embedder``, else ``embed_module``)."""
        if self.token_embedder is not None:
            return self.token_embedder(model, ids)
        return self.embed_module(model)(ids)

    def unembed_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return get_module(model, self.unembed)

    def attn_module(self, model: torch.nn.Module, layer: int) -> torch.nn.Module:
        """Attention module of decoder block ``layer`` (1-based, see docs/CONTRACTS.md)."""
        return get_module(self.layer_modules(model)[layer - 1], self.attn)

    def o_proj_module(self, model: torch.nn.Module, layer: int) -> torch.nn.Linear:
        return get_module(self.attn_module(model, layer), self.o_proj)

    def num_layers(self, model: torch.nn.Module) -> int:
        return int(self.text_cfg(model).num_hidden_layers)

    def num_heads(self, model: torch.nn.Module) -> int:
        return int(self.text_cfg(model).num_attention_heads)

    def head_dim(self, model: torch.nn.Module) -> int:
        cfg = self.text_cfg(model)
        hd = getattr(cfg, "head_dim", None)
        return int(hd) if hd else int(cfg.hidden_size) // int(cfg.num_attention_heads)

    def hidden_size(self, model: torch.nn.Module) -> int:
        return int(self.text_cfg(model).hidden_size)

    def residual_index(self, model: torch.nn.Module) -> int | None:
        """Index of the residual stream in a block's stacked output (None: the output is the stream)."""
        return int(getattr(self.text_cfg(model), self.residual_stream_attr)) if self.residual_stream_attr else None

    def audio_token_id(self, model: torch.nn.Module) -> int:
        cfg = getattr(model.config, self.audio_token_from) if self.audio_token_from else model.config
        return int(_first_attr(cfg, self.audio_token_attrs))


_MEL_MARGIN = 8  # mel frames kept past the longest clip (the convolutions look 2 frames ahead)


def encode_pooled(model: torch.nn.Module, feats: dict[str, torch.Tensor], counts: Sequence[int],
                   ) -> list[torch.Tensor]:
    """Models exposing ``get_audio_features(input_features, ...)`` whose pooler_output is the
    flat sequence of audio embeddings; split per clip using the processor's token counts."""
    kwargs = {k: v for k, v in feats.items() if k != "input_features"}
    out = model.get_audio_features(feats["input_features"], **kwargs)
    emb = out.pooler_output if hasattr(out, "pooler_output") else out
    if isinstance(emb, (list, tuple)):
        emb = torch.cat(list(emb), 0)
    return list(torch.split(emb, [int(n) for n in counts], dim=0))
