"""The model-agnostic forward engine shared by scoring, interventions and analyses.

It drives any architecture described by an :class:`~interventions.specs.ArchSpec`.  ``Engine`` is a thin
facade over four parts, one concern each:

* :class:`~interventions.audio_tokenizer.AudioTokenizer` (``engine.audio_tokenizer``): processor calls, chat
  rendering, audio-placeholder expansion and the per-clip placeholder counts;
* :class:`~interventions.encoder_cache.EncoderCache` (``engine.encoder_cache``): audio clips are encoded once
  each (by :func:`clip_key`) and matched-duration silence once per clip length; bounded by bytes;
* :class:`~interventions.prefix_cache.PrefixCache` (``engine.prefix_cache``): the decoder KV of shared audio
  prefixes, computed once per prefix; bounded by bytes;
* :class:`~interventions.decoder.Decoder` (``engine.decoder``): prompts left-padded with explicit position ids
  (padding never changes a score), audio embeddings scattered into the placeholder positions, text-decoder
  passes on ``inputs_embeds``, the unembedding only at the positions asked for.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .arch_spec import ArchSpec
from .audio_tokenizer import AudioTokenizer, Tokenized, expand_placeholders
from .decoder import Decoder, Prepared
from .encoder_cache import DEFAULT_ENCODER_CACHE_BYTES, EncoderCache
from .identity import clip_key
from .prefix_cache import DEFAULT_PREFIX_CACHE_BYTES, PrefixCache

__all__ = ["Engine", "Prepared", "Tokenized", "clip_key", "expand_placeholders", "DEFAULT_ENCODER_CACHE_BYTES",
           "DEFAULT_PREFIX_CACHE_BYTES"]


class Engine:
    """Wraps (model, processor, spec): tokenization with audio, cached audio encoding, decoder runs.

    ``encoder_cache_bytes`` / ``prefix_cache_bytes``: byte budgets of the two caches (None: unbounded).
    ``cache_clips``: an additional bound on the number of encoded clips kept (None: none; the byte budget
    is the bound)."""

    def __init__(self, model: torch.nn.Module, processor: Any, spec: ArchSpec, *, cache_clips: int | None = None,
                 encoder_cache_bytes: int | None = DEFAULT_ENCODER_CACHE_BYTES,
                 prefix_cache_bytes: int | None = DEFAULT_PREFIX_CACHE_BYTES):
        self.model = model
        self.processor = processor
        self.spec = spec
        self.audio_tokenizer = AudioTokenizer(processor, spec, spec.audio_token_id(model))
        self.tokenizer = self.audio_tokenizer.tokenizer
        self.sampling_rate = self.audio_tokenizer.sampling_rate
        self.encoder_cache = EncoderCache(model, spec, max_bytes=encoder_cache_bytes, max_entries=cache_clips)
        self.decoder = Decoder(model, spec, pad_token_id=self.pad_token_id, audio_token_id=self.audio_token_id)
        # Shared audio prefixes (system turn + audio, up to the last audio token): their KV cache is
        # computed once and reused by every prompt format / intervention of the same clip.
        self.prefix_cache = PrefixCache(self.decoder, max_bytes=prefix_cache_bytes)

    def clear_caches(self) -> None:
        """Forget encoded clips, known placeholder counts and prefix KV caches (a fresh start)."""
        self.encoder_cache.clear()
        self.audio_tokenizer.clear()
        self.prefix_cache.clear()

    # ---- counters (read by tests and the benchmark) ------------------------------------
    @property
    def encoder_calls(self) -> int:
        """Number of clips actually run through the audio encoder."""
        return self.encoder_cache.calls

    @property
    def decoder_calls(self) -> int:
        """Number of decoder forward passes (batches)."""
        return self.decoder.calls

    @property
    def prefix_tokens_computed(self) -> int:
        """Prefix positions actually run through the decoder."""
        return self.prefix_cache.tokens_computed

    @property
    def prefix_hits(self) -> int:
        """Prompts whose prefix KV was reused rather than computed."""
        return self.prefix_cache.hits

    @property
    def prefix_cache_size(self) -> int | None:
        """An additional bound on the number of prefixes kept (None: none; the byte budget is the bound)."""
        return self.prefix_cache.store.max_entries

    @prefix_cache_size.setter
    def prefix_cache_size(self, n: int | None) -> None:
        self.prefix_cache.store.max_entries = None if n is None else int(n)
        self.prefix_cache.store.evict()

    @property
    def _fast_tokenize(self) -> bool | None:
        """Tokenizer-only placeholder expansion: None = not verified yet (``audio_tokenizer.fast``)."""
        return self.audio_tokenizer.fast

    @_fast_tokenize.setter
    def _fast_tokenize(self, value: bool | None) -> None:
        self.audio_tokenizer.fast = value

    # ---- properties --------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def position_rows(self, pos: torch.Tensor) -> torch.Tensor:
        """(B, T) position ids in the layout the decoder takes ((rows, B, T) for M-RoPE)."""
        return self.decoder.position_rows(pos)

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.dtype

    @property
    def audio_window_s(self) -> float | None:
        """Seconds of audio the encoder sees per clip (longer clips are truncated): the spec's
        ``audio_window_s``, else the feature extractor's ``chunk_length`` (30 s for Whisper-style)."""
        fe = getattr(self.processor, "feature_extractor", None)
        w = self.spec.audio_window_s  # 0: no cut (long audio is windowed by the processor)
        if w is None:
            w = getattr(fe, "chunk_length", None)
        return float(w) if w else None

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers(self.model)

    @property
    def audio_token_id(self) -> int:
        return self.spec.audio_token_id(self.model)

    # ---- tokenization (AudioTokenizer) -------------------------------------------------
    def tokenize(self, prompt: str, clips: Sequence[np.ndarray]) -> Tokenized:
        """One rendered prompt with its audio placeholders expanded.

        The first time a clip is seen the processor runs (mel features + placeholder expansion); later
        prompts with the same clip only run the tokenizer and expand each placeholder by the clip's known
        token count, skipping feature extraction (its encoder output is cached anyway).  The shortcut is
        checked once against the processor and disabled if they ever disagree.
        """
        return self.audio_tokenizer.tokenize(prompt, clips)

    def features(self, tok: Tokenized) -> dict[str, torch.Tensor]:
        """The processor's audio features of a tokenized prompt (computed now if the shortcut skipped them)."""
        return self.audio_tokenizer.features(tok)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens)."""
        return self.audio_tokenizer.encode_text(text)

    def tokenize_features_only(self, clip: np.ndarray) -> Tokenized:
        """Processor features and placeholder count for one clip on its own (a minimal prompt)."""
        return self.audio_tokenizer.tokenize_features_only(clip)

    def render_chat(self, user_text: str, *, assistant_prefix: str | None = None, n_audio: int = 1,
                    add_generation_prompt: bool = True) -> str:
        """Render USER(audio..., text) [+ opened ASSISTANT turn + prefix] with the model's template."""
        return self.audio_tokenizer.render_chat(user_text, assistant_prefix=assistant_prefix, n_audio=n_audio,
                                                add_generation_prompt=add_generation_prompt)

    # ---- audio encoding (EncoderCache) -------------------------------------------------
    def audio_embeddings(self, toks: Sequence[Tokenized], *, silence: bool = False) -> list[list[torch.Tensor]]:
        """Per prompt, per clip: the embeddings that fill its audio positions.

        Each distinct clip is encoded once (cached by content hash).  With ``silence=True`` the
        clip is replaced by zeros of the same duration (same audio-token count), cached per length.
        """
        return self.encoder_cache.embeddings(toks, self.audio_tokenizer, self.device, silence=silence)

    def _audio(self, toks: Sequence[Tokenized], silence: bool) -> list[list[torch.Tensor]]:
        return self.audio_embeddings(toks, silence=silence)

    # ---- batching (Decoder) ------------------------------------------------------------
    def prepare(self, toks: Sequence[Tokenized], *, silence: bool | Sequence[bool] = False) -> Prepared:
        """Left-pad, embed, scatter audio embeddings, build explicit position ids."""
        return self.decoder.prepare(toks, self._audio, silence=silence)

    # ---- shared audio prefixes (PrefixCache) -------------------------------------------
    def drop_prefix_cache(self) -> None:
        """Forget the prefix KV caches (e.g. to free device memory after an out-of-memory error)."""
        self.prefix_cache.clear()

    def reserve_prefix_cache(self, n: int) -> None:
        """Keep at least the ``n`` most recently used prefixes, even beyond the byte budget (callers walking
        clips in chunks pass twice the chunk size)."""
        self.prefix_cache.reserve(n)

    def split_point(self, tok: Tokenized) -> int | None:
        """End of the shared audio prefix: one past the last audio placeholder (None: no audio, or
        nothing after it)."""
        return self.prefix_cache.split_point(tok)

    def prefix_key(self, tok: Tokenized, point: int | None = None) -> str | None:
        """Identity of a prompt's audio prefix (its token ids and clips); None when it has none.
        ``point``: its split point, if already known."""
        return self.prefix_cache.key(tok, point)

    def prepare_split(self, toks: Sequence[Tokenized]) -> Prepared:
        """Like :meth:`prepare`, but the audio prefix of every prompt comes from the prefix KV cache
        (computed now, once per distinct prefix, if missing) and only the text after it is embedded.

        Valid for passes that read or edit the suffix only (scoring at the last prompt position, and
        interventions that act there).  Falls back to :meth:`prepare` when a prompt has no audio prefix.
        """
        return self.prefix_cache.prepare_split(toks, self._audio)

    def split_last(self, prep: Prepared) -> Prepared:
        """Run every position but the last prompt position once (unsteered, KV cached) and return a
        batch holding only the last position on top of that cache (see :meth:`Decoder.split_last`)."""
        return self.decoder.split_last(prep)

    # ---- decoder -------------------------------------------------------------------------
    def run(self, prep: Prepared, *, past_key_values: Any = None, use_cache: bool = False,
            output_hidden_states: bool = False, output_attentions: bool = False,
            inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
            position_ids: torch.Tensor | None = None, input_ids: torch.Tensor | None = None) -> Any:
        """Run the text decoder; returns transformers' BaseModelOutputWithPast (see :meth:`Decoder.run`)."""
        return self.decoder.run(prep, past_key_values=past_key_values, use_cache=use_cache,
                                output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                position_ids=position_ids, input_ids=input_ids)

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from *normed* final states (float32)."""
        return self.decoder.unembed(h)

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        """The decoder's final norm."""
        return self.decoder.final_norm(h)

    def lens_logits(self, hidden_states: Sequence[torch.Tensor], layer: int, index: Any) -> torch.Tensor:
        """Logit lens of layer ``layer`` (0..L) from transformers' ``hidden_states`` tuple.

        The final norm is applied exactly once: the last entry is already normed in transformers 5.
        """
        return self.decoder.lens_logits(hidden_states, layer, index)
