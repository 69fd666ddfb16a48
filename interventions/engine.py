"""The model-agnostic forward engine shared by scoring, interventions and analyses.

It drives any architecture described by an :class:`~interventions.specs.ArchSpec`:

* audio clips are encoded once each (content-hash cache) and matched-duration silence once per
  clip length, then scattered into the audio placeholder positions of the token embeddings;
* prompts are left-padded with explicit position ids, so padding never changes a score;
* the text decoder runs on ``inputs_embeds``; the unembedding is applied only at the positions
  asked for (Qwen2-Audio ignores ``logits_to_keep``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import arch_extras
from .specs import ArchSpec

__all__ = ["Engine", "Prepared", "clip_key"]


def clip_key(wave: np.ndarray) -> str:
    """Return a cache key of an audio clip: content hash and length."""
    a = np.ascontiguousarray(wave, dtype=np.float32)
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() + f":{a.shape[0]}"


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


@dataclass
class Tokenized:
    """One prompt tokenized with its audio placeholders expanded (no padding)."""

    input_ids: torch.Tensor  # (T,)
    clips: list[np.ndarray]  # audio clips in order of appearance
    features: dict[str, torch.Tensor] | None  # processor audio features (batch dim = clips); None = not computed
    prompt: str = ""


def _cache_kwarg(module: torch.nn.Module) -> str:
    """The decoder's name for the KV cache argument: ``cache`` (transformers >= 5.2x; ``past_key_values`` is
    deprecated there with a FutureWarning on every call) or ``past_key_values`` (older versions)."""
    import inspect

    cls = type(module)
    name = _CACHE_KWARG.get(cls)
    if name is None:
        try:
            params = inspect.signature(module.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            params = {}
        name = _CACHE_KWARG[cls] = "cache" if "cache" in params else "past_key_values"
    return name


_CACHE_KWARG: dict[type, str] = {}


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


class Engine:
    """Wraps (model, processor, spec): tokenization with audio, cached audio encoding, decoder runs."""

    def __init__(self, model: torch.nn.Module, processor: Any, spec: ArchSpec, *, cache_clips: int = 4096):
        self.model = model
        self.processor = processor
        self.spec = spec
        self.tokenizer = getattr(processor, "tokenizer", processor)
        fe = getattr(processor, "feature_extractor", None)
        self.sampling_rate = int(getattr(fe, "sampling_rate", 16000))
        self._audio_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_clips
        self._expansion: dict[str, int] = {}  # clip content key -> audio placeholder count
        self._fast_tokenize: bool | None = None  # tokenizer-only expansion, verified against the processor once
        self.encoder_calls = 0  # number of clips actually run through the audio encoder
        self.decoder_calls = 0  # number of decoder forward passes (batches)
        # Shared audio prefixes (system turn + audio, up to the last audio token): their KV cache is
        # computed once and reused by every prompt format / intervention of the same clip.
        self.prefix_cache_size = 256  # entries kept (LRU); see reserve_prefix_cache
        self._prefix_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.prefix_tokens_computed = 0  # prefix positions actually run through the decoder
        self.prefix_hits = 0  # prompts whose prefix KV was reused rather than computed

    def clear_caches(self) -> None:
        """Forget encoded clips, known placeholder counts and prefix KV caches (a fresh start)."""
        self._audio_cache.clear()
        self._expansion.clear()
        self._prefix_cache.clear()

    # ---- properties --------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def position_rows(self, pos: torch.Tensor) -> torch.Tensor:
        """(B, T) position ids in the layout the decoder takes ((rows, B, T) for M-RoPE)."""
        rows = self.spec.position_id_rows
        return pos.unsqueeze(0).expand(rows, -1, -1) if rows > 1 else pos
    @property
    def device(self) -> torch.device:
        return self.spec.embed_module(self.model).weight.device  # pyright: ignore[reportReturnType]  (Module.__getattr__)

    @property
    def dtype(self) -> torch.dtype:
        return self.spec.embed_module(self.model).weight.dtype  # pyright: ignore[reportReturnType]  (Module.__getattr__)

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

    # ---- tokenization --------------------------------------------------------------------
    def tokenize(self, prompt: str, clips: Sequence[np.ndarray]) -> Tokenized:
        """One rendered prompt with its audio placeholders expanded.

        The first time a clip is seen the processor runs (mel features + placeholder expansion); later
        prompts with the same clip only run the tokenizer and expand each placeholder by the clip's known
        token count, skipping feature extraction (its encoder output is cached anyway).  The shortcut is
        checked once against the processor and disabled if they ever disagree.
        """
        keys = [clip_key(c) for c in clips]
        if clips and self._fast_tokenize:
            counts = [self._expansion.get(k) for k in keys]
            if all(c is not None for c in counts):
                ids = self._expand(prompt, counts)  # type: ignore[arg-type]
                if ids is not None:
                    return Tokenized(ids, list(clips), None, prompt)
        tok = self._processor_tokenize(prompt, clips)
        if clips:
            counts = self._clip_token_counts(tok)
            self._expansion.update(zip(keys, counts))
            if self._fast_tokenize is None:
                fast = self._expand(prompt, counts)
                self._fast_tokenize = fast is not None and torch.equal(fast, tok.input_ids)
        return tok

    def _processor_tokenize(self, prompt: str, clips: Sequence[np.ndarray]) -> Tokenized:
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
            tok.features = self._processor_tokenize(tok.prompt, tok.clips).features
        assert tok.features is not None, "the processor returned no features for a prompt with audio"
        return tok.features

    def _expand(self, prompt: str, counts: Sequence[int]) -> torch.Tensor | None:
        """Tokenizer ids of ``prompt`` with the i-th audio placeholder repeated counts[i] times."""
        return expand_placeholders(self.tokenizer(prompt)["input_ids"], self.audio_token_id, counts)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---- audio encoding ------------------------------------------------------------------
    def _clip_token_counts(self, tok: Tokenized) -> list[int]:
        """Audio placeholder count per clip of a tokenized prompt (contiguous runs)."""
        is_audio = (tok.input_ids == self.audio_token_id).tolist()
        runs, cur = [], 0
        for a in is_audio + [False]:
            if a:
                cur += 1
            elif cur:
                runs.append(cur)
                cur = 0
        if len(runs) != len(tok.clips):
            # One run per clip is the common layout; fall back to an even split.
            total = sum(runs)
            runs = [total // len(tok.clips)] * len(tok.clips)
        return runs

    @torch.no_grad()
    def audio_embeddings(self, toks: Sequence[Tokenized], *, silence: bool = False) -> list[list[torch.Tensor]]:
        """Per prompt, per clip: the embeddings that fill its audio positions.

        Each distinct clip is encoded once (cached by content hash).  With ``silence=True`` the
        clip is replaced by zeros of the same duration (same audio-token count), cached per length.
        """
        todo: list[tuple[str, int, int]] = []  # (key, prompt index, clip index)
        for i, t in enumerate(toks):
            for j, c in enumerate(t.clips):
                key = f"silence:{len(c)}" if silence else clip_key(c)
                if key not in self._audio_cache:
                    todo.append((key, i, j))
        seen: set[str] = set()
        batch_feats: list[dict[str, torch.Tensor]] = []
        batch_keys: list[str] = []
        batch_counts: list[int] = []
        for key, i, j in todo:
            if key in seen:
                continue
            seen.add(key)
            t = toks[i]
            if silence:
                t = self.tokenize_features_only(np.zeros_like(t.clips[j]))
                feats = t.features
                count = self._clip_token_counts(t)[0]
            else:
                counts = self._clip_token_counts(t)
                feats = {k: self._clip_rows(v, counts, j) for k, v in self.features(t).items()}
                count = counts[j]
            batch_feats.append(feats)
            batch_keys.append(key)
            batch_counts.append(count)
        # Each clip is encoded on its own: its embedding must not depend on which other clips happen to be
        # uncached at the same moment (padding to a batch's longest clip changes the last digits), so that
        # a resumed run, or a task scored beside other tasks, is bit-identical to an uninterrupted one.
        dev = self.device
        encode_audio = self.spec.encode_audio
        if encode_audio is None:
            raise NotImplementedError(f"architecture {self.spec.name!r} has no audio encoder path (encode_audio)")
        for feats, key, cnt in zip(batch_feats, batch_keys, batch_counts):
            one = {k: v.to(dev) for k, v in feats.items()}
            one["_tokens_per_clip"] = torch.tensor([cnt])
            embs = encode_audio(self.model, one)
            self.encoder_calls += 1
            for key, e, cnt in zip([key], embs, [cnt]):
                if e.shape[0] != cnt:
                    raise RuntimeError(f"audio encoder gave {e.shape[0]} embeddings for {cnt} placeholders")
                self._audio_cache[key] = e.detach()
                while len(self._audio_cache) > self._cache_size:
                    self._audio_cache.popitem(last=False)
        result = []
        for t in toks:
            per = []
            for c in t.clips:
                key = f"silence:{len(c)}" if silence else clip_key(c)
                self._audio_cache.move_to_end(key)
                per.append(self._audio_cache[key])
            result.append(per)
        return result

    @staticmethod
    def _clip_rows(v: torch.Tensor, counts: Sequence[int], j: int) -> torch.Tensor:
        """Feature rows of clip j: one row per clip, or (Voxtral) several fixed-size windows per clip,
        as many as the clip's share of the audio tokens (every window gives the same token count)."""
        if v.shape[0] == len(counts):
            return v[j : j + 1]
        total = sum(counts)
        if total == 0 or (v.shape[0] * counts[j]) % total:
            raise RuntimeError(f"cannot assign {v.shape[0]} feature rows to clips with {list(counts)} audio tokens")
        start = v.shape[0] * sum(counts[:j]) // total
        return v[start : start + v.shape[0] * counts[j] // total]

    def tokenize_features_only(self, clip: np.ndarray) -> Tokenized:
        """Processor features and placeholder count for one clip on its own (a minimal prompt)."""
        placeholder = self.spec.audio_prompt
        if placeholder is None:
            placeholder = self.render_chat("", add_generation_prompt=False, n_audio=1)
        return self._processor_tokenize(placeholder, [clip])

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

    # ---- batching ------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, toks: Sequence[Tokenized], *, silence: bool | Sequence[bool] = False) -> Prepared:
        """Left-pad, embed, scatter audio embeddings, build explicit position ids."""
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
        emb = self.spec.embed_ids(self.model, ids)
        audio_mask = (ids == self.audio_token_id) & mask.bool()
        groups = {False: [i for i in range(B) if not sil[i]], True: [i for i in range(B) if sil[i]]}
        for s, idx in groups.items():
            if not idx:
                continue
            embs = self.audio_embeddings([toks[i] for i in idx], silence=s)
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

    # ---- shared audio prefixes ------------------------------------------------------------
    def drop_prefix_cache(self) -> None:
        """Forget the prefix KV caches (e.g. to free device memory after an out-of-memory error)."""
        self._prefix_cache.clear()

    def reserve_prefix_cache(self, n: int) -> None:
        """Keep at least ``n`` prefixes (callers walking clips in chunks pass twice the chunk size)."""
        self.prefix_cache_size = max(self.prefix_cache_size, int(n))

    def split_point(self, tok: Tokenized) -> int | None:
        """End of the shared audio prefix: one past the last audio placeholder (None: no audio, or
        nothing after it)."""
        pos = (tok.input_ids == self.audio_token_id).nonzero()
        if pos.numel() == 0:
            return None
        p = int(pos[-1]) + 1
        return p if p < int(tok.input_ids.shape[0]) else None

    def prefix_key(self, tok: Tokenized, point: int | None = None) -> str | None:
        """Identity of a prompt's audio prefix (its token ids and clips); None when it has none.
        ``point``: its split point, if already known."""
        p = self.split_point(tok) if point is None else point
        if p is None:
            return None
        h = hashlib.blake2b(tok.input_ids[:p].numpy().astype(np.int64).tobytes(), digest_size=16).hexdigest()
        return f"{h}:" + "|".join(clip_key(c) for c in tok.clips)

    @torch.no_grad()
    def prepare_split(self, toks: Sequence[Tokenized]) -> Prepared:
        """Like :meth:`prepare`, but the audio prefix of every prompt comes from the prefix KV cache
        (computed now, once per distinct prefix, if missing) and only the text after it is embedded.

        Valid for passes that read or edit the suffix only (scoring at the last prompt position, and
        interventions that act there).  Falls back to :meth:`prepare` when a prompt has no audio prefix.
        """
        split = [self.split_point(t) for t in toks]
        if any(p is None for p in split) or not self.spec.prefix_kv_cache:
            return self.prepare(toks)
        points = [p for p in split if p is not None]  # all of them (narrowed to int)
        keys = [self.prefix_key(t, p) for t, p in zip(toks, points)]
        entries: dict[str, torch.Tensor] = {}
        missing: list[int] = []
        for i, k in enumerate(keys):
            if k in entries:
                continue
            if k in self._prefix_cache:
                self._prefix_cache.move_to_end(k)
                entries[k] = self._prefix_cache[k]
            else:
                entries[k] = None  # type: ignore[assignment]
                missing.append(i)
        if missing:
            ptoks = [Tokenized(toks[i].input_ids[: points[i]], toks[i].clips, toks[i].features, toks[i].prompt)
                     for i in missing]
            pp = self.prepare(ptoks)
            kv = self.run(pp, use_cache=True).past_key_values
            layers = kv.layers
            for r, i in enumerate(missing):
                n = points[i]
                # (L, 2, H_kv, n, D): keys and values of this prompt's prefix, padding dropped.
                e = torch.stack([torch.stack([lay.keys[r, :, -n:], lay.values[r, :, -n:]]) for lay in layers])
                entries[keys[i]] = e
                self._prefix_cache[keys[i]] = e
                self.prefix_tokens_computed += n
            while len(self._prefix_cache) > self.prefix_cache_size:
                self._prefix_cache.popitem(last=False)
        B = len(toks)
        self.prefix_hits += B - len(missing)  # rows whose prefix KV came from the cache
        P = max(points)
        S = [int(t.input_ids.shape[0]) - p for t, p in zip(toks, points)]
        Smax = max(S)
        first = entries[keys[0]]
        Lk, _, Hk, _, D = first.shape
        dev = self.device
        kv = torch.zeros((B, Lk, 2, Hk, P, D), dtype=first.dtype, device=first.device)
        ids = torch.full((B, Smax), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, P + Smax), dtype=torch.long)
        pos = torch.zeros((B, Smax), dtype=torch.long)
        for b, (t, p, s) in enumerate(zip(toks, points, S)):
            kv[b, :, :, :, P - p:] = entries[keys[b]]
            ids[b, Smax - s:] = t.input_ids[p:]
            mask[b, P - p: P] = 1
            mask[b, P + Smax - s:] = 1
            pos[b, Smax - s:] = torch.arange(p, p + s)
        ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
        if bool((ids == self.audio_token_id).any()):
            raise RuntimeError("audio placeholder after the split point")
        emb = self.spec.embed_ids(self.model, ids)
        pos = self.position_rows(pos)
        cfg = self.spec.text_cfg(self.model)

        def past() -> Any:
            from transformers import DynamicCache

            return DynamicCache(ddp_cache_data=[(kv[:, l, 0], kv[:, l, 1]) for l in range(Lk)], config=cfg)

        return Prepared(ids, mask, pos, emb, torch.zeros_like(ids, dtype=torch.bool),
                        [p + s for p, s in zip(points, S)], past=past)

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
            from transformers import DynamicCache

            past = DynamicCache(config=self.spec.text_cfg(self.model))
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
        self.decoder_calls += 1
        if past_key_values is None and prep.past is not None and inputs_embeds is None:
            past_key_values = prep.past()
        return dec(
            inputs_embeds=prep.inputs_embeds if inputs_embeds is None else inputs_embeds,
            attention_mask=prep.attention_mask if attention_mask is None else attention_mask,
            position_ids=prep.position_ids if position_ids is None else position_ids,
            **{_cache_kwarg(dec): past_key_values},
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
        return self.spec.norm_module(self.model)(h)

    def lens_logits(self, hidden_states: Sequence[torch.Tensor], layer: int, index: Any) -> torch.Tensor:
        """Logit lens of layer ``layer`` (0..L) from transformers' ``hidden_states`` tuple.

        The final norm is applied exactly once: the last entry is already normed in transformers 5.
        """
        h = arch_extras.lens_state(self.spec, self.model, hidden_states[layer], index)
        if not (layer == len(hidden_states) - 1 and self.spec.last_hidden_state_normed):
            h = self.final_norm(h)
        return self.unembed(h)
