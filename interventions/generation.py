"""Batched greedy generation on the engine: left padding, one KV cache, incremental decoding.

``greedy_generate`` runs a batch of prompts (audio expanded, see :meth:`Engine.tokenize`) through one
prompt pass and then one decoder step per new token for the rows still running; finished rows are
dropped from the batch and its KV cache.  Each row stops at the first of: an EOS token (not kept), one of
its own stop strings appearing in the decoded text, or its own token budget.  New text is detokenized
incrementally (a few tokens per step, not the whole output again), so the cost is linear in the length.
The tokens are those of transformers' greedy ``generate`` on the same prompts (tested), cut at the stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .engine import Engine, Tokenized

__all__ = ["IncrementalDetokenizer", "Generation", "greedy_generate"]


class IncrementalDetokenizer:
    """Text of a growing token list, decoding only a short window per new token (the scheme of
    text-generation-inference / vLLM: a token's text is final once the window decodes cleanly)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens whose text is already in self.text
        self.pending = ""  # text of the tokens after _read as decoded now (e.g. an incomplete character)

    def add(self, token: int) -> str:
        """Append a token; returns the newly final text (may be "" while a character is incomplete)."""
        self.ids.append(int(token))
        dec = self.tok.decode
        before = dec(self.ids[self._prefix:self._read], skip_special_tokens=True)
        now = dec(self.ids[self._prefix:], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            delta = now[len(before):]
            self.text += delta
            self.pending = ""
            self._prefix, self._read = self._read, len(self.ids)
            return delta
        self.pending = now[len(before):] if now.startswith(before) else ""
        return ""

    @property
    def current(self) -> str:
        """The whole text as a full decode shows it now (final text + pending)."""
        return self.text + self.pending


@dataclass
class Generation:
    """One prompt's greedy continuation: token ids and text (cut before the first stop string)."""

    ids: list[int] = field(default_factory=list)  # generated tokens (EOS excluded)
    text: str = ""  # decoded text, cut before the first stop string
    stop: str | None = None  # "eos", "until" or "length"


@torch.no_grad()
def greedy_generate(  # noqa: C901 - one decoding loop; its branches are the stop rules
engine: Engine, toks: Sequence[Tokenized], *, max_new_tokens: Sequence[int] | int,
                    until: Sequence[Sequence[str]] | None = None, eos_token_ids: Sequence[int] | None = None,
                    intervention: Any = None) -> list[Generation]:
    """Greedy continuation of every prompt in ``toks`` (one batch).

    ``max_new_tokens`` and ``until`` are per prompt (or one value for all); ``eos_token_ids`` default to
    the tokenizer's EOS.  An ``intervention`` acts during the prompt pass at the last prompt position
    (as for scoring); generated tokens run unsteered on its KV cache."""
    from .scoring import last_positions

    B = len(toks)
    if B == 0:
        return []
    max_new = [int(max_new_tokens)] * B if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
    stops = [list(u) for u in until] if until is not None else [[] for _ in range(B)]
    if len(max_new) != B or len(stops) != B:
        raise ValueError(f"max_new_tokens and until need one entry per prompt ({B}); got {len(max_new)} and "
                         f"{len(stops)}")
    tokzr = engine.tokenizer
    eos = set(int(e) for e in (eos_token_ids if eos_token_ids is not None else [tokzr.eos_token_id])
              if e is not None)
    gens = [Generation() for _ in range(B)]
    dets = [IncrementalDetokenizer(tokzr) for _ in range(B)]
    longest = [max((len(s) for s in st), default=0) for st in stops]

    prep = engine.prepare(toks)
    if intervention is not None and getattr(intervention, "name", "none") != "none":
        with intervention.applied(engine, prep, list(toks), last_positions(prep)):
            out = engine.run(prep, use_cache=True)
    else:
        out = engine.run(prep, use_cache=True)
    cache = out.past_key_values
    nxt = engine.unembed(out.last_hidden_state[:, -1]).argmax(-1).tolist()
    dev = prep.input_ids.device
    mask = prep.attention_mask
    pos = torch.tensor(prep.lengths, dtype=torch.long, device=dev)  # position of each row's next token
    active = list(range(B))  # original row of each batch row
    for b in range(B):
        if max_new[b] <= 0:
            gens[b].stop = "length"
    while True:
        keep: list[int] = []  # batch rows that continue
        for r, b in enumerate(active):
            if gens[b].stop is not None:
                continue
            t = int(nxt[r])
            if t in eos:
                gens[b].stop = "eos"
                continue
            gens[b].ids.append(t)
            d = dets[b]
            n_before = len(d.text)
            d.add(t)
            if stops[b]:
                # only text new since the last step can complete a stop string
                tail = d.current[max(0, n_before - longest[b] + 1):]
                if any(u and u in tail for u in stops[b]):
                    gens[b].stop = "until"
                    continue
            if len(gens[b].ids) >= max_new[b]:
                gens[b].stop = "length"
                continue
            keep.append(r)
        if not keep:
            break
        if len(keep) < len(active):
            rows = torch.tensor(keep, device=dev)
            cache.batch_select_indices(rows)
            mask, pos = mask[rows], pos[rows]
            active = [active[r] for r in keep]
            nxt = [nxt[r] for r in keep]
        ids = torch.tensor(nxt, dtype=torch.long, device=dev)[:, None]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=dev)], 1)
        out = engine.run(prep, inputs_embeds=engine.spec.embed_ids(engine.model, ids), attention_mask=mask,
                         position_ids=engine.position_rows(pos[:, None]), past_key_values=cache, use_cache=True,
                         input_ids=ids)
        cache = out.past_key_values
        pos = pos + 1
        nxt = engine.unembed(out.last_hidden_state[:, -1]).argmax(-1).tolist()
    for b, g in enumerate(gens):
        text = tokzr.decode(g.ids, skip_special_tokens=True)  # once, in full: exactly the old output
        for u in stops[b]:
            if u and u in text:
                text = text.split(u)[0]
        g.text = text
    return gens
