"""Logit lens over the layers of an LALM (AudioLens Eqs. 1-2, Fig. 2-4).

For every item and every layer l in 0..L (0 = embeddings, l = output of decoder block l, see
docs/CONTRACTS.md) this reads, at a few prompt positions, the probability that the lens
``p = softmax(W_U norm(h))`` gives to the first token of each answer choice.  The final norm is applied
exactly once (``Engine.lens_logits``: transformers already returns the last entry normed).

Positions (left-padded batches, so the same index for every row):

* ``last`` (-1): the last prompt token ("is"), where the answer is predicted;
* ``penultimate`` (-2): the attribute-mentioning token before it ("gender");
* ``masked_last``: the last token again, in a second pass in which attention *from the last position*
  to the audio positions is blocked in every layer (``hooks.mask_attention``); other positions are
  unaffected (AudioLens Fig. 4, gray lines).

Scores are stored as log-probabilities (exact, no underflow); ``np.exp`` gives the probabilities.
The information score (``interventions.formulas.information_score``) is the fraction of items whose
highest-probability label is the gold one; an item is *correct* when that holds at the final layer and the last
position (the model's own first-token prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from interventions import hooks
from interventions.engine import Engine
from interventions.formulas import first_token_ids, gold_mask
from interventions.formulas import information_score as info_score
from interventions.scoring import last_positions, pad_choices

__all__ = ["POSITIONS", "LensResult", "lens_batch", "info_score", "LensTable", "lens_table"]

POSITIONS: dict[str, int] = {"last": -1, "penultimate": -2}
MASKED = "masked_last"


@dataclass
class LensResult:
    """Lens of one item: ``logp[name]`` is (L+1, C) log-probs of each choice's first token."""

    logp: dict[str, np.ndarray]
    tokens: dict[str, str]  # the token at each position (for the record)
    choice_ids: list[int]

    def probs(self, name: str) -> np.ndarray:
        return np.exp(self.logp[name])


def _lens_at(engine: Engine, hidden_states: Sequence[torch.Tensor], index: int,
             ids: list[list[int]]) -> list[np.ndarray]:
    """(L+1, C_b) log-probs of the choices' first tokens at sequence index ``index`` for every row b."""
    n_layers = len(hidden_states)
    per_row: list[list[np.ndarray]] = [[] for _ in ids]
    for l in range(n_layers):
        lp = torch.log_softmax(engine.lens_logits(hidden_states, l, (slice(None), index)), -1)  # (B, V)
        for b, row_ids in enumerate(ids):
            per_row[b].append(lp[b, torch.tensor(row_ids, device=lp.device)].double().cpu().numpy())
    return [np.stack(r) for r in per_row]


@torch.no_grad()
def lens_batch(engine: Engine, items: Sequence[Any], *, positions: dict[str, int] | None = None,
               masked: bool = True) -> list[LensResult]:
    """Lens of a batch of items: one forward with ``output_hidden_states`` (+ one masked pass)."""
    positions = POSITIONS if positions is None else positions
    toks = [it.tok for it in items]
    ids = [first_token_ids(it) for it in items]
    prep = engine.prepare(toks)
    out = engine.run(prep, output_hidden_states=True)
    hs = out.hidden_states
    logp: list[dict[str, np.ndarray]] = [{} for _ in items]
    tokens: list[dict[str, str]] = [{} for _ in items]
    for name, idx in positions.items():
        for b, arr in enumerate(_lens_at(engine, hs, idx, ids)):
            logp[b][name] = arr
            tokens[b][name] = engine.tokenizer.decode([int(prep.input_ids[b, idx])])
    del out, hs
    if masked:
        last = last_positions(prep)
        with hooks.mask_attention(engine.model, engine.spec, prep.attention_mask, last, prep.audio_mask):
            out_m = engine.run(prep, output_hidden_states=True)
        for b, arr in enumerate(_lens_at(engine, out_m.hidden_states, -1, ids)):
            logp[b][MASKED] = arr
            tokens[b][MASKED] = tokens[b].get("last", engine.tokenizer.decode([int(prep.input_ids[b, -1])]))
    return [LensResult(lp, tk, i) for lp, tk, i in zip(logp, tokens, ids)]


_pad = pad_choices  # one home: interventions.scoring.pad_choices


@dataclass
class LensTable:
    """Information scores of one set of items (one task): per position and per correctness subset."""

    n: int
    n_labels: int
    accuracy: float
    info: dict[str, list[float]]  # position -> I^l, l = 0..L
    info_correct: dict[str, list[float]]
    info_incorrect: dict[str, list[float]]
    n_correct: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def clean(v):
            return [None if (isinstance(x, float) and np.isnan(x)) else float(x) for x in v]

        return {"n": self.n, "n_labels": self.n_labels, "accuracy": self.accuracy, "n_correct": self.n_correct,
                "info": {k: clean(v) for k, v in self.info.items()},
                "info_correct": {k: clean(v) for k, v in self.info_correct.items()},
                "info_incorrect": {k: clean(v) for k, v in self.info_incorrect.items()}, **self.extra}


def lens_table(logps: Sequence[dict[str, np.ndarray]], gold: Sequence, n_labels: int | None = None) -> LensTable:
    """Information scores (all / correct / incorrect items) from per-item lens log-probs; ``gold[i]`` is the
    gold index or the list of indices that count as correct."""
    if not logps:
        raise ValueError("no items")
    gold_a = list(gold)
    names = list(logps[0].keys())
    arrays = {k: _pad([np.asarray(lp[k], dtype=float) for lp in logps]) for k in names}
    ref = arrays["last"] if "last" in arrays else arrays[names[0]]
    correct = np.take_along_axis(gold_mask(gold_a, ref.shape[-1]), ref[:, -1].argmax(-1)[:, None], axis=1)[:, 0]
    info, info_c, info_w = {}, {}, {}
    for k, arr in arrays.items():
        info[k] = list(info_score(arr, gold_a))
        info_c[k] = list(info_score(arr, gold_a, correct))
        info_w[k] = list(info_score(arr, gold_a, ~correct))
    C = n_labels if n_labels is not None else int(max(np.isfinite(lp[names[0]][0]).sum() for lp in logps))
    return LensTable(n=len(logps), n_labels=C, accuracy=float(correct.mean()), info=info, info_correct=info_c,
                     info_incorrect=info_w, n_correct=int(correct.sum()))
