"""Likelihood scoring of multiple-choice items: all choices of an item from one prefix pass.

An item is one prompt (with its audio) and several continuations.  The prefix is run once for
a batch of items; single-token continuations read the next-token distribution at the last prompt
position; multi-token continuations reuse the prefix's KV cache (rows selected per continuation)
and are batched together.  Interventions act at the last prompt position during the prefix pass.

With ``share_prefix`` the audio prefix of each prompt (system turn and audio, up to the last audio
token) comes from the engine's prefix KV cache: a clip scored under several prompt formats or
interventions runs its prefix through the decoder once.  Interventions act at the last prompt
position only, so the prefix is the same with and without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .engine import Engine, Tokenized

if TYPE_CHECKING:
    from .steering import Intervention

__all__ = ["LogLik", "MCItem", "ItemScore", "score_items", "last_positions", "pad_choices"]


class LogLik(float):
    """A float (sum of continuation log-probs) that also carries the first token's log-prob."""

    first_token_logprob: float
    n_tokens: int

    def __new__(cls, value: float, first_token_logprob: float, n_tokens: int = 1):
        obj = super().__new__(cls, value)
        obj.first_token_logprob = float(first_token_logprob)
        obj.n_tokens = int(n_tokens)
        return obj

    def __reduce__(self):
        return (LogLik, (float(self), self.first_token_logprob, self.n_tokens))


@dataclass
class MCItem:
    """A multiple-choice item: tokenized prompt, continuations and metadata."""
    tok: Tokenized  # the prompt (audio expanded)
    continuations: list[list[int]]  # token ids of each continuation
    meta: dict[str, Any] = field(default_factory=dict)
    # Token whose log-prob is reported as each choice's first-token score (default: continuation[0];
    # audio_lalm's first_token=audiolens sets the label's first sub-token tokenized alone).
    first_ids: list[int] | None = None


@dataclass
class ItemScore:
    """Scores of one item's choices: log-likelihood, first-token log-prob and greedy flag."""
    loglik: list[float]
    first: list[float]
    greedy: list[bool]

    def as_results(self) -> list[tuple[LogLik, bool]]:
        return [(LogLik(l, f, 1), g) for l, f, g in zip(self.loglik, self.first, self.greedy)]


def pad_choices(rows: Sequence[Any]) -> Any:
    """Stack per-item score arrays of shape (..., C_i) into (N, ..., max C), missing choices = -inf.

    Works for torch tensors and numpy arrays alike and keeps the rows' dtype: the one padding helper."""
    C = max(int(r.shape[-1]) for r in rows)
    shape = (len(rows),) + tuple(rows[0].shape[:-1]) + (C,)
    if isinstance(rows[0], torch.Tensor):
        out: Any = torch.full(shape, -math.inf, dtype=rows[0].dtype)
    else:
        out = np.full(shape, -np.inf, dtype=np.result_type(rows[0].dtype, np.float64))
    for i, r in enumerate(rows):
        out[i, ..., : r.shape[-1]] = r
    return out


def last_positions(prep) -> torch.Tensor:
    """Index of the last prompt position of every row (left padding: T-1)."""
    return torch.full((prep.batch_size,), prep.seq_len - 1, dtype=torch.long, device=prep.input_ids.device)


@torch.no_grad()
def score_items(engine: Engine, items: Sequence[MCItem], intervention: Intervention | None = None, *,
                share_prefix: bool = False) -> list[ItemScore]:
    """Score every continuation of every item; one decoder pass over the batch of prefixes
    (plus one batched pass for the multi-token continuations, plus what the intervention needs).

    ``share_prefix`` takes each prompt's audio prefix from the engine's prefix KV cache, computing it
    once per distinct prefix."""
    if not items:
        return []
    toks = [it.tok for it in items]
    prep = engine.prepare_split(toks) if share_prefix else engine.prepare(toks)
    need_cache = any(len(c) > 1 for it in items for c in it.continuations)
    # The last prompt position of every row, counted from the end: the same index in the main pass
    # (which may cover only the suffix) and in an intervention's full-length auxiliary passes.
    last = torch.full((prep.batch_size,), -1, dtype=torch.long, device=prep.input_ids.device)
    if intervention is not None and intervention.name != "none":
        if intervention.unsteered_aux_pass:
            # Everything before the last prompt position is unaffected by the intervention: run it once,
            # unsteered; the intervention's unsteered pass and the steered pass cover the last position only.
            prep = engine.split_last(prep)
        with intervention.applied(engine, prep, toks, last):
            out = engine.run(prep, use_cache=need_cache)
    else:
        out = engine.run(prep, use_cache=need_cache)
    h_last = out.last_hidden_state[:, -1]
    logp0 = torch.log_softmax(engine.unembed(h_last), -1)  # (B, V)

    results = [ItemScore([], [], []) for _ in items]
    multi: list[tuple[int, int]] = []  # (item, choice)
    for i, it in enumerate(items):
        for j, cont in enumerate(it.continuations):
            if not cont:
                raise ValueError(f"empty continuation for choice {j} of item {it.meta.get('desc', i)}")
            first = float(logp0[i, cont[0]])
            results[i].first.append(float(logp0[i, it.first_ids[j]]) if it.first_ids else first)
            results[i].loglik.append(first)
            results[i].greedy.append(bool(int(logp0[i].argmax()) == cont[0]))
            if len(cont) > 1:
                multi.append((i, j))

    if multi:
        cache = out.past_key_values
        rows = torch.tensor([i for i, _ in multi], device=prep.input_ids.device)
        cache.batch_select_indices(rows)
        conts = [items[i].continuations[j] for i, j in multi]
        n = max(len(c) for c in conts) - 1
        pad = engine.pad_token_id
        ids = torch.full((len(multi), n), pad, dtype=torch.long, device=rows.device)
        cmask = torch.zeros((len(multi), n), dtype=torch.long, device=rows.device)
        for k, c in enumerate(conts):
            ids[k, : len(c) - 1] = torch.tensor(c[:-1])
            cmask[k, : len(c) - 1] = 1
        attn = torch.cat([prep.attention_mask[rows], cmask], 1)
        start = torch.tensor([prep.lengths[i] for i, _ in multi], device=rows.device)
        pos = start[:, None] + torch.arange(n, device=rows.device)[None, :]
        pos = engine.position_rows(pos)
        emb = engine.spec.embed_ids(engine.model, ids)
        out2 = engine.run(prep, inputs_embeds=emb, attention_mask=attn, position_ids=pos, past_key_values=cache,
                          use_cache=True, input_ids=ids)
        hs = out2.last_hidden_state  # (M, n, d)
        for k, ((i, j), c) in enumerate(zip(multi, conts)):
            m = len(c) - 1
            lp = torch.log_softmax(engine.unembed(hs[k, :m]), -1)
            tgt = torch.tensor(c[1:], device=lp.device)
            results[i].loglik[j] += float(lp[torch.arange(m), tgt].sum())
            results[i].greedy[j] = results[i].greedy[j] and bool((lp.argmax(-1) == tgt).all())
    return results
