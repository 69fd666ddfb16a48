"""The prefix cache: the decoder KV of shared audio prefixes (system turn + audio, up to the last audio token).

Computed once per distinct prefix and reused by every prompt format / intervention of the same clip; bounded by
bytes (least recently used first out), with a working set a caller may reserve (:meth:`PrefixCache.reserve`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from .audio_tokenizer import Tokenized
from .byte_lru import ByteLRU
from .decoder import AudioEmbeddings, Decoder, Prepared
from .identity import clip_key

__all__ = ["PrefixCache", "DEFAULT_PREFIX_CACHE_BYTES", "split_point", "prefix_key"]

DEFAULT_PREFIX_CACHE_BYTES = 2 << 30  # 2 GiB of prefix keys and values


def split_point(tok: Tokenized, audio_token_id: int) -> int | None:
    """End of the shared audio prefix: one past the last audio placeholder (None: no audio, or nothing after it)."""
    pos = (tok.input_ids == audio_token_id).nonzero()
    if pos.numel() == 0:
        return None
    p = int(pos[-1]) + 1
    return p if p < int(tok.input_ids.shape[0]) else None


def prefix_key(tok: Tokenized, point: int | None) -> str | None:
    """Identity of a prompt's audio prefix ending at ``point`` (its token ids and clips); None when ``point`` is."""
    if point is None:
        return None
    h = hashlib.blake2b(tok.input_ids[:point].numpy().astype(np.int64).tobytes(), digest_size=16).hexdigest()
    return f"{h}:" + "|".join(clip_key(c) for c in tok.clips)


class PrefixCache:
    """Prefix KV per prefix key: a ``(L, 2, H_kv, n, D)`` tensor of keys and values (padding dropped)."""

    def __init__(self, decoder: Decoder, *, max_bytes: int | None = DEFAULT_PREFIX_CACHE_BYTES,
                 max_entries: int | None = None):
        self.decoder = decoder
        self.store: ByteLRU[torch.Tensor] = ByteLRU(max_bytes, max_entries=max_entries)
        self.tokens_computed = 0  # prefix positions actually run through the decoder
        self.hits = 0  # prompts whose prefix KV was reused rather than computed

    def clear(self) -> None:
        """Forget every prefix (e.g. to free device memory after an out-of-memory error)."""
        self.store.clear()

    def reserve(self, n: int) -> None:
        """Keep at least the ``n`` most recently used prefixes, whatever their bytes (callers walking clips in
        chunks pass twice the chunk size, so a chunk's prefixes survive until every task has used them)."""
        self.store.keep = max(self.store.keep, int(n))

    def split_point(self, tok: Tokenized) -> int | None:
        """End of the shared audio prefix of ``tok`` (see :func:`split_point`)."""
        return split_point(tok, self.decoder.audio_token_id)

    def key(self, tok: Tokenized, point: int | None = None) -> str | None:
        """Identity of a prompt's audio prefix; ``point``: its split point, if already known."""
        return prefix_key(tok, self.split_point(tok) if point is None else point)

    @torch.no_grad()
    def prepare_split(self, toks: Sequence[Tokenized], audio: AudioEmbeddings) -> Prepared:
        """Like :meth:`Decoder.prepare`, but the audio prefix of every prompt comes from the cache
        (computed now, once per distinct prefix, if missing) and only the text after it is embedded.

        Valid for passes that read or edit the suffix only (scoring at the last prompt position, and
        interventions that act there).  Falls back to :meth:`Decoder.prepare` when a prompt has no audio prefix.
        """
        dec = self.decoder
        split = [self.split_point(t) for t in toks]
        if any(p is None for p in split) or not dec.spec.prefix_kv_cache:
            return dec.prepare(toks, audio)
        points = [p for p in split if p is not None]  # all of them (narrowed to int)
        keys = [prefix_key(t, p) or "" for t, p in zip(toks, points)]
        entries: dict[str, torch.Tensor] = {}
        missing: list[int] = []
        queued: set[str] = set()
        for i, k in enumerate(keys):
            if k in entries or k in queued:
                continue
            hit = self.store.get(k)
            if hit is not None:
                entries[k] = hit
            else:
                queued.add(k)
                missing.append(i)
        if missing:
            ptoks = [Tokenized(toks[i].input_ids[: points[i]], toks[i].clips, toks[i].features, toks[i].prompt)
                     for i in missing]
            pp = dec.prepare(ptoks, audio)
            kv = dec.run(pp, use_cache=True).past_key_values
            layers = kv.layers
            for r, i in enumerate(missing):
                n = points[i]
                # (L, 2, H_kv, n, D): keys and values of this prompt's prefix, padding dropped.
                e = torch.stack([torch.stack([lay.keys[r, :, -n:], lay.values[r, :, -n:]]) for lay in layers])
                entries[keys[i]] = e
                self.store.put(keys[i], e)
                self.tokens_computed += n
        B = len(toks)
        self.hits += B - len(missing)  # rows whose prefix KV came from the cache
        P = max(points)
        S = [int(t.input_ids.shape[0]) - p for t, p in zip(toks, points)]
        Smax = max(S)
        first = entries[keys[0]]
        Lk, _, Hk, _, D = first.shape
        dev = dec.device
        kv = torch.zeros((B, Lk, 2, Hk, P, D), dtype=first.dtype, device=first.device)
        ids = torch.full((B, Smax), dec.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, P + Smax), dtype=torch.long)
        pos = torch.zeros((B, Smax), dtype=torch.long)
        for b, (t, p, s) in enumerate(zip(toks, points, S)):
            kv[b, :, :, :, P - p:] = entries[keys[b]]
            ids[b, Smax - s:] = t.input_ids[p:]
            mask[b, P - p: P] = 1
            mask[b, P + Smax - s:] = 1
            pos[b, Smax - s:] = torch.arange(p, p + s)
        ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
        if bool((ids == dec.audio_token_id).any()):
            raise RuntimeError("audio placeholder after the split point")
        emb = dec.embed(ids)
        pos = dec.position_rows(pos)
        cfg = dec.spec.text_cfg(dec.model)

        def past() -> Any:
            from transformers import DynamicCache

            return DynamicCache(ddp_cache_data=[(kv[:, l, 0], kv[:, l, 1]) for l in range(Lk)], config=cfg)

        return Prepared(ids, mask, pos, emb, torch.zeros_like(ids, dtype=torch.bool),
                        [p + s for p, s in zip(points, S)], past=past)
