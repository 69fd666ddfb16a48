"""The decoder runner: left-padded batches with audio embeddings scattered in, text-decoder passes, unembedding.

Prompts are left-padded with explicit position ids, so padding never changes a score; the text decoder runs on
``inputs_embeds``; the unembedding is applied only at the positions asked for (Qwen2-Audio ignores
``logits_to_keep``).  Per-model details come from the :class:`~interventions.specs.ArchSpec`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from . import arch_extras
from .arch_spec import ArchSpec
from .audio_tokenizer import Tokenized

__all__ = ["Decoder", "Prepared", "AudioEmbeddings"]

# (prompts, silence) -> per prompt, per clip: the embeddings of its audio positions
AudioEmbeddings = Callable[[Sequence[Tokenized], bool], list[list[torch.Tensor]]]


@dataclass
class Prepared:
    """A left-padded batch ready for the decoder."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T) 1 = real token
    position_ids: torch.Tensor  # (B, T) or (rows, B, T)
    inputs_embeds: torch.Tensor  # (B, T, d)
    audio_mask: torch.Tensor  # (B, T) bool
    lengths: list[int]  # unpadded lengths (a split batch: prefix + suffix)
    # A split batch (``Engine.prepare_split`` / ``split_last``): the tensors above cover only the
    # positions after a cached part; ``past()`` returns its KV cache and ``attention_mask`` covers both.
    past: Callable[[], Any] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def pad(self, b: int) -> int:
        return self.seq_len - self.lengths[b]


class Decoder:
    """Runs the text decoder of (model, spec) on prepared batches."""

    def __init__(self, model: torch.nn.Module, spec: ArchSpec, *, pad_token_id: int, audio_token_id: int):
        self.model = model
        self.spec = spec
        self.pad_token_id = int(pad_token_id)
        self.audio_token_id = int(audio_token_id)
        self.calls = 0  # number of decoder forward passes (batches)
        self._cache_kwarg: str | None = None

    # ---- properties --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.spec.embed_module(self.model).weight.device  # pyright: ignore[reportReturnType]  (Module.__getattr__)

    @property
    def dtype(self) -> torch.dtype:
        return self.spec.embed_module(self.model).weight.dtype  # pyright: ignore[reportReturnType]  (Module.__getattr__)

    def cache_kwarg(self) -> str:
        """The decoder's name for the KV cache argument: ``cache`` (transformers >= 5.2x; ``past_key_values`` is
        deprecated there with a FutureWarning on every call) or ``past_key_values`` (older versions)."""
        if self._cache_kwarg is None:
            try:
                params = inspect.signature(self.spec.decoder_module(self.model).forward).parameters
            except (TypeError, ValueError):  # pragma: no cover
                params = {}
            self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        return self._cache_kwarg

    def position_rows(self, pos: torch.Tensor) -> torch.Tensor:
        """(B, T) position ids in the layout the decoder takes ((rows, B, T) for M-RoPE)."""
        rows = self.spec.position_id_rows
        return pos.unsqueeze(0).expand(rows, -1, -1) if rows > 1 else pos

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ``ids`` as the model computes them (``ArchSpec.embed_ids``)."""
        return self.spec.embed_ids(self.model, ids)

    def empty_cache(self) -> Any:
        """An empty KV cache for this decoder."""
        from transformers import DynamicCache

        return DynamicCache(config=self.spec.text_cfg(self.model))

    # ---- batching ------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, toks: Sequence[Tokenized], audio: AudioEmbeddings, *,
                silence: bool | Sequence[bool] = False) -> Prepared:
        """Left-pad, embed, scatter audio embeddings (``audio(prompts, silence)``), build explicit position ids."""
        sil = [silence] * len(toks) if isinstance(silence, bool) else list(silence)
        lengths = [int(t.input_ids.shape[0]) for t in toks]
        T = max(lengths)
        B = len(toks)
        ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        for b, t in enumerate(toks):
            ids[b, T - lengths[b]:] = t.input_ids
            mask[b, T - lengths[b]:] = 1
        dev = self.device
        ids = ids.to(dev)
        mask = mask.to(dev)
        emb = self.embed(ids)
        audio_mask = (ids == self.audio_token_id) & mask.bool()
        groups = {False: [i for i in range(B) if not sil[i]], True: [i for i in range(B) if sil[i]]}
        for s, idx in groups.items():
            if not idx:
                continue
            embs = audio([toks[i] for i in idx], s)
            for i, per in zip(idx, embs):
                if not per:
                    continue
                flat = torch.cat(per, 0).to(emb.dtype)
                pos = audio_mask[i].nonzero().squeeze(-1)
                if pos.numel() != flat.shape[0]:
                    raise RuntimeError(f"{pos.numel()} audio positions but {flat.shape[0]} audio embeddings")
                emb[i, pos] = flat
        pos_ids = self.position_rows((mask.cumsum(-1) - 1).clamp(min=0))
        return Prepared(ids, mask, pos_ids, emb, audio_mask, lengths)

    @torch.no_grad()
    def split_last(self, prep: Prepared) -> Prepared:
        """Run every position but the last prompt position once (unsteered, KV cached) and return a
        batch holding only the last position on top of that cache.

        Interventions act at the last prompt position only, so a steered pass needs only that
        position; an intervention's own unsteered auxiliary pass over the same prompt (head steering
        caches the unsteered head outputs) then costs one position too.  ``past()`` returns the
        context cache cropped back to the context, so several passes can run on it in turn.
        """
        n_new = prep.seq_len - 1
        past = prep.past() if prep.past is not None else None
        if n_new > 0:
            if past is None:  # full-length layers: a sliding-window layer drops keys the next pass here needs
                from transformers import DynamicCache

                past = DynamicCache()
            pos = prep.position_ids[..., :-1]
            out = self.run(prep, past_key_values=past, use_cache=True, inputs_embeds=prep.inputs_embeds[:, :-1],
                           attention_mask=prep.attention_mask[:, :-1], position_ids=pos,
                           input_ids=prep.input_ids[:, :-1])
            past = out.past_key_values
        if past is None:  # a one-token prompt: nothing to cache
            past = self.empty_cache()
        n_ctx = int(prep.attention_mask.shape[1]) - 1

        def cropped() -> Any:
            # Per layer: an auxiliary pass that stopped early appended to the first layers only.
            for lay in past.layers:
                keys, values = getattr(lay, "keys", None), getattr(lay, "values", None)
                if keys is not None and values is not None and keys.shape[-2] > n_ctx:
                    lay.keys, lay.values = keys[..., :n_ctx, :], values[..., :n_ctx, :]
                    if hasattr(lay, "cumulative_length"):
                        lay.cumulative_length = n_ctx
            return past

        return Prepared(prep.input_ids[:, -1:], prep.attention_mask, prep.position_ids[..., -1:],
                        prep.inputs_embeds[:, -1:], prep.audio_mask[:, -1:], prep.lengths, past=cropped)

    # ---- decoder -------------------------------------------------------------------------
    def run(self, prep: Prepared, *, past_key_values: Any = None, use_cache: bool = False,
            output_hidden_states: bool = False, output_attentions: bool = False,
            inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
            position_ids: torch.Tensor | None = None, input_ids: torch.Tensor | None = None) -> Any:
        """Run the text decoder; returns transformers' BaseModelOutputWithPast.

        ``input_ids``: the token ids of ``inputs_embeds`` when given (architectures whose decoder also reads the
        ids, see ``ArchSpec.decoder_token_inputs``; without ``inputs_embeds`` they are ``prep.input_ids``)."""
        dec = self.spec.decoder_module(self.model)
        self.calls += 1
        if past_key_values is None and prep.past is not None and inputs_embeds is None:
            past_key_values = prep.past()
        return dec(
            inputs_embeds=prep.inputs_embeds if inputs_embeds is None else inputs_embeds,
            attention_mask=prep.attention_mask if attention_mask is None else attention_mask,
            position_ids=prep.position_ids if position_ids is None else position_ids,
            **{self.cache_kwarg(): past_key_values},
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **arch_extras.decoder_token_kwargs(self.spec, self.model,
                                               prep.input_ids if inputs_embeds is None else input_ids),
        )

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from *normed* final states (float32)."""
        return arch_extras.softcap(self.spec, self.model, self.spec.unembed_module(self.model)(h).float())

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        """The decoder's final norm."""
        return self.spec.norm_module(self.model)(h)

    def lens_logits(self, hidden_states: Sequence[torch.Tensor], layer: int, index: Any) -> torch.Tensor:
        """Logit lens of layer ``layer`` (0..L) from transformers' ``hidden_states`` tuple.

        The final norm is applied exactly once: the last entry is already normed in transformers 5.
        """
        h = arch_extras.lens_state(self.spec, self.model, hidden_states[layer], index)
        if not (layer == len(hidden_states) - 1 and self.spec.last_hidden_state_normed):
            h = self.final_norm(h)
        return self.unembed(h)
