"""The encoder cache: the audio embeddings of each clip (and of matched-duration silence), computed once.

Bounded by bytes (least recently used first out); an evicted clip is simply encoded again, with the same
result, because every clip is encoded on its own.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .arch_spec import ArchSpec
from .audio_tokenizer import AudioTokenizer, Tokenized
from .byte_lru import ByteLRU, nbytes
from .identity import clip_key

__all__ = ["EncoderCache", "DEFAULT_ENCODER_CACHE_BYTES"]

DEFAULT_ENCODER_CACHE_BYTES = 2 << 30  # 2 GiB of audio embeddings (about 340 30-s Qwen2-Audio clips in bf16)


def _key(wave, silence: bool) -> str:
    return f"silence:{len(wave)}" if silence else clip_key(wave)


class EncoderCache:
    """Audio embeddings per clip, by clip identity (:func:`~interventions.identity.clip_key`)."""

    def __init__(self, model: torch.nn.Module, spec: ArchSpec, *, max_bytes: int | None = DEFAULT_ENCODER_CACHE_BYTES,
                 max_entries: int | None = None):
        self.model = model
        self.spec = spec
        self.store: ByteLRU[torch.Tensor] = ByteLRU(max_bytes, max_entries=max_entries)
        self.calls = 0  # number of clips actually run through the audio encoder

    def clear(self) -> None:
        """Forget every encoded clip."""
        self.store.clear()

    def encode(self, feats: dict[str, torch.Tensor], count: int, device: torch.device) -> torch.Tensor:
        """Run the spec's audio encoder on one clip's features; its ``count`` placeholder embeddings."""
        encode_audio = self.spec.encode_audio
        if encode_audio is None:
            raise NotImplementedError(f"architecture {self.spec.name!r} has no audio encoder path (encode_audio)")
        one = {k: v.to(device) for k, v in feats.items()}
        e = encode_audio(self.model, one, [count])[0]
        self.calls += 1
        if e.shape[0] != count:
            raise RuntimeError(f"audio encoder gave {e.shape[0]} embeddings for {count} placeholders")
        e = e.detach()
        if e.untyped_storage().nbytes() > nbytes(e):  # a view of a larger output: keep only its own bytes
            e = e.clone()
        return e

    @torch.no_grad()
    def embeddings(self, toks: Sequence[Tokenized], tokenizer: AudioTokenizer, device: torch.device, *,
                   silence: bool = False) -> list[list[torch.Tensor]]:
        """Per prompt, per clip: the embeddings that fill its audio positions.

        Each distinct clip is encoded once (cached by content hash).  With ``silence=True`` the
        clip is replaced by zeros of the same duration (same audio-token count), cached per length.
        """
        have: dict[str, torch.Tensor] = {}  # this call's embeddings: never lost to an eviction during the call
        todo: list[tuple[str, int, int]] = []  # (key, prompt index, clip index) of each clip to encode
        queued: set[str] = set()
        for i, t in enumerate(toks):
            for j, c in enumerate(t.clips):
                key = _key(c, silence)
                if key in have:
                    continue
                hit = self.store.get(key)
                if hit is not None:
                    have[key] = hit
                elif key not in queued:
                    queued.add(key)
                    todo.append((key, i, j))
        # Each clip is encoded on its own: its embedding must not depend on which other clips happen to be
        # uncached at the same moment (padding to a batch's longest clip changes the last digits), so that
        # a resumed run, or a task scored beside other tasks, is bit-identical to an uninterrupted one.
        inputs = [(key, *tokenizer.clip_features(toks[i], j, silence=silence)) for key, i, j in todo]
        for key, feats, count in inputs:
            have[key] = e = self.encode(feats, count, device)
            self.store.put(key, e)
        return [[have[_key(c, silence)] for c in t.clips] for t in toks]
