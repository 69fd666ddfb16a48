"""Audio tokenization: the processor call, audio-placeholder expansion, chat rendering and per-clip token counts.

The first time a clip is seen the processor runs (mel features + placeholder expansion) and the clip's
placeholder count is recorded; later prompts with that clip only run the tokenizer and repeat each
placeholder by the known count (checked once against the processor, disabled if they ever disagree).
Per-model details come from the :class:`~interventions.specs.ArchSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .arch_spec import ArchSpec
from .identity import clip_key

__all__ = ["AudioTokenizer", "Tokenized", "expand_placeholders", "clip_token_counts", "clip_rows"]


@dataclass
class Tokenized:
    """One prompt tokenized with its audio placeholders expanded (no padding)."""

    input_ids: torch.Tensor  # (T,)
    clips: list[np.ndarray]  # audio clips in order of appearance
    features: dict[str, torch.Tensor] | None  # processor audio features (batch dim = clips); None = not computed
    prompt: str = ""


def expand_placeholders(ids: Sequence[int], audio_token_id: int, counts: Sequence[int]) -> torch.Tensor | None:
    """``ids`` with the i-th audio placeholder repeated counts[i] times; None when the placeholders and
    ``counts`` do not match one to one."""
    out: list[int] = []
    j = 0
    for t in ids:
        if t == audio_token_id:
            if j >= len(counts):
                return None
            out.extend([audio_token_id] * int(counts[j]))
            j += 1
        else:
            out.append(t)
    return torch.tensor(out, dtype=torch.long) if j == len(counts) else None


def clip_token_counts(input_ids: torch.Tensor, audio_token_id: int, n_clips: int) -> list[int]:
    """Audio placeholder count per clip of a tokenized prompt: its contiguous runs of placeholders (one run
    per clip is the common layout; otherwise the placeholders are split evenly between the clips)."""
    is_audio = (input_ids == audio_token_id).tolist()
    runs, cur = [], 0
    for a in is_audio + [False]:
        if a:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    if len(runs) != n_clips:
        total = sum(runs)
        runs = [total // n_clips] * n_clips
    return runs


def clip_rows(v: torch.Tensor, counts: Sequence[int], j: int) -> torch.Tensor:
    """Feature rows of clip j: one row per clip, or (Voxtral) several fixed-size windows per clip,
    as many as the clip's share of the audio tokens (every window gives the same token count)."""
    if v.shape[0] == len(counts):
        return v[j : j + 1]
    total = sum(counts)
    if total == 0 or (v.shape[0] * counts[j]) % total:
        raise RuntimeError(f"cannot assign {v.shape[0]} feature rows to clips with {list(counts)} audio tokens")
    start = v.shape[0] * sum(counts[:j]) // total
    return v[start : start + v.shape[0] * counts[j] // total]


class AudioTokenizer:
    """Prompts with audio -> :class:`Tokenized` (ids with expanded placeholders, processor features)."""

    def __init__(self, processor: Any, spec: ArchSpec, audio_token_id: int):
        self.processor = processor
        self.spec = spec
        self.audio_token_id = int(audio_token_id)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        fe = getattr(processor, "feature_extractor", None)
        self.sampling_rate = int(getattr(fe, "sampling_rate", 16000))
        self.expansion: dict[str, int] = {}  # clip content key -> audio placeholder count
        self.fast: bool | None = None  # tokenizer-only expansion, verified against the processor once

    def clear(self) -> None:
        """Forget the known placeholder counts."""
        self.expansion.clear()

    # ---- placeholder counts --------------------------------------------------------------
    def known_counts(self, clips: Sequence[np.ndarray]) -> list[int] | None:
        """The recorded placeholder count of every clip, or None (a clip not seen yet, or the tokenizer-only
        shortcut unverified or disabled)."""
        if not clips or not self.fast:
            return None
        counts = [self.expansion.get(clip_key(c)) for c in clips]
        return None if any(c is None for c in counts) else [int(c) for c in counts if c is not None]

    def counts(self, tok: Tokenized) -> list[int]:
        """Audio placeholder count per clip of a tokenized prompt."""
        return clip_token_counts(tok.input_ids, self.audio_token_id, len(tok.clips))

    def learn(self, tok: Tokenized, expand: Callable[[str, Sequence[int]], torch.Tensor | None] | None = None) -> None:
        """Record the clips' placeholder counts of a processor-made prompt; the first time, check that
        tokenizer-only expansion (``expand``, default :meth:`expand`) gives the processor's ids."""
        if not tok.clips:
            return
        counts = self.counts(tok)
        self.expansion.update(zip([clip_key(c) for c in tok.clips], counts))
        if self.fast is None:
            fast = (expand or self.expand)(tok.prompt, counts)
            self.fast = fast is not None and torch.equal(fast, tok.input_ids)

    # ---- tokenization --------------------------------------------------------------------
    def tokenize(self, prompt: str, clips: Sequence[np.ndarray]) -> Tokenized:
        """One rendered prompt with its audio placeholders expanded (the processor runs only for clips whose
        placeholder count is not known yet)."""
        counts = self.known_counts(clips)
        if counts is not None:
            ids = self.expand(prompt, counts)
            if ids is not None:
                return Tokenized(ids, list(clips), None, prompt)
        tok = self.processor_tokenize(prompt, clips)
        self.learn(tok)
        return tok

    def processor_tokenize(self, prompt: str, clips: Sequence[np.ndarray]) -> Tokenized:
        """One processor call: ids with expanded placeholders and the audio features of ``clips``."""
        kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
        if clips:
            kwargs["audio"] = [np.asarray(c, dtype=np.float32) for c in clips]
            kwargs["sampling_rate"] = self.sampling_rate
        out = self.processor(**kwargs)
        feats = {k: out[k] for k in self.spec.processor_feature_keys if k in out}
        ids = out["input_ids"][0]
        if clips:
            n = int((ids == self.audio_token_id).sum())
            if n == 0:
                raise ValueError("the rendered prompt has no audio placeholder but audio was given")
        return Tokenized(ids, list(clips), feats, prompt)

    def features(self, tok: Tokenized) -> dict[str, torch.Tensor]:
        """The processor's audio features of a tokenized prompt (computed now if the shortcut skipped them)."""
        if tok.features is None:
            tok.features = self.processor_tokenize(tok.prompt, tok.clips).features
        assert tok.features is not None, "the processor returned no features for a prompt with audio"
        return tok.features

    def expand(self, prompt: str, counts: Sequence[int]) -> torch.Tensor | None:
        """Tokenizer ids of ``prompt`` with the i-th audio placeholder repeated counts[i] times."""
        return expand_placeholders(self.tokenizer(prompt)["input_ids"], self.audio_token_id, counts)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize_features_only(self, clip: np.ndarray) -> Tokenized:
        """Processor features and placeholder count for one clip on its own (a minimal prompt)."""
        placeholder = self.spec.audio_prompt
        if placeholder is None:
            placeholder = self.render_chat("", add_generation_prompt=False, n_audio=1)
        return self.processor_tokenize(placeholder, [clip])

    def clip_features(self, tok: Tokenized, j: int, *, silence: bool = False) -> tuple[dict[str, torch.Tensor], int]:
        """Encoder input of clip ``j`` of ``tok`` on its own: its feature rows and its placeholder count.
        ``silence``: of zeros of the clip's duration instead (a minimal prompt through the processor)."""
        if silence:
            t = self.tokenize_features_only(np.zeros_like(tok.clips[j]))
            assert t.features is not None
            return t.features, self.counts(t)[0]
        counts = self.counts(tok)
        return {k: clip_rows(v, counts, j) for k, v in self.features(tok).items()}, counts[j]

    # ---- chat rendering ------------------------------------------------------------------
    def render_chat(self, user_text: str, *, assistant_prefix: str | None = None, n_audio: int = 1,
                    add_generation_prompt: bool = True) -> str:
        """Render USER(audio..., text) [+ opened ASSISTANT turn + prefix] with the model's template."""
        content: list[dict[str, Any]] = [{"type": "audio", "audio_url": f"audio_{i}"} for i in range(n_audio)]
        if user_text:
            content.append({"type": "text", "text": user_text})
        msgs = [{"role": "user", "content": content}]
        text = self.processor.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=False)
        if assistant_prefix:
            text = text + assistant_prefix
        return text
