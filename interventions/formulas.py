"""One home per paper formula: grep an equation number to find the one function that computes it.

Papers (in /work/shared/papers and README's references):

* AudioLens (Yang et al.), Eqs. 2-5: information score, critical layer (two equations), enrichment;
* causal tracing of audio-text fusion: the recovery rate;
* Audio-specialist heads and steering (Glazer, Aharon & Fetaya), Eqs. 1-9: audio-attention mass, specialist
  score and listening score, layer weights, the layer-guided direction and final-layer steering, head delta,
  its residual mapping and the head update.

Each function's docstring starts with the paper and its equation number, so grep finds it.
Everything else (the hooks of :mod:`interventions.steering`, the calibration sweep of
:mod:`interventions.calibrate`, the analyses) calls these functions, so a forward-pass intervention and its
cached-state counterpart compute the same thing.  Layers are 1..L, heads (layer, head) pairs
(docs/CONTRACTS.md).  Torch functions keep the input's device; numpy functions return float64.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["gold_mask", "information_score", "critical_contributions", "critical_layer", "enrich_delta",
           "recovery_rate",
           "audio_attention_mass", "specialist_correlations", "select_specialists", "listening_score",
           "layer_weights", "layer_guided_direction", "final_layer_steering", "head_delta", "head_to_residual",
           "head_steering_update", "first_token_ids"]


def first_token_ids(item: Any) -> list[int]:
    """Token id of the first token of every continuation of a scoring item (the papers' label tokens), or the
    item's explicit ``first_ids`` (``first_token=audiolens``: each label tokenized alone)."""
    first = getattr(item, "first_ids", None)
    return [int(i) for i in first] if first else [int(c[0]) for c in item.continuations]


# ---- AudioLens ----------------------------------------------------------------------------------------------


def gold_mask(gold: Any, C: int) -> np.ndarray:
    """(N, C) bool: which choices count as correct. ``gold[i]`` is an index or a list of indices (MMAU: every
    option whose text is the answer text counts, as MMAU's own evaluation matches by text)."""
    if isinstance(gold, torch.Tensor):
        gold = gold.detach().cpu().tolist()
    mask = np.zeros((len(gold), C), dtype=bool)
    for i, g in enumerate(gold):
        for k in (g if isinstance(g, (list, tuple, np.ndarray)) else [g]):
            mask[i, int(k)] = True
    return mask


def information_score(logp: Any, gold: Any, subset: Any = None) -> np.ndarray:
    """AudioLens Eq. 2: I^l = (1/N) sum_n 1[argmax_y p^l_n(y) = y_n], per layer.

    ``logp``: (N, L+1, C) scores of each choice (pad missing choices with -inf); ``gold``: (N,) indices, or per
    item a list of every index that counts as correct (:func:`gold_mask`); ``subset``: optional boolean (N,)
    mask.  Returns (L+1,) float64; NaN where the subset is empty."""
    lp = np.asarray(logp.detach().cpu() if isinstance(logp, torch.Tensor) else logp, dtype=float)
    mask = gold_mask(gold, lp.shape[-1])
    if subset is not None:
        m = np.asarray(subset.detach().cpu() if isinstance(subset, torch.Tensor) else subset, dtype=bool)
        lp, mask = lp[m], mask[m]
    if lp.shape[0] == 0:
        return np.full(lp.shape[1], np.nan)
    return np.take_along_axis(mask, lp.argmax(-1), axis=1).mean(0)


def critical_contributions(info: Sequence[float], n_labels: int, alpha: float) -> np.ndarray:
    """AudioLens Eq. 3: s^l = max(0, I^l - (1 + alpha) / |Y|) for l = 1..L (``info`` holds l = 0..L)."""
    info_arr = np.asarray(info, dtype=float)[1:]
    return np.maximum(0.0, info_arr - (1.0 + alpha) / n_labels)


def critical_layer(info: Sequence[float], n_labels: int, alpha: float) -> float:
    """AudioLens Eq. 4: l* = sum_l s^l l / sum_l s^l over layers 1..L; NaN when every s^l is 0."""
    s = critical_contributions(info, n_labels, alpha)
    tot = float(s.sum())
    if not tot > 0:
        return math.nan
    layers = np.arange(1, s.shape[0] + 1, dtype=float)
    return float((s * layers).sum() / tot)


def enrich_delta(h_source: torch.Tensor, lam: float) -> torch.Tensor:
    """AudioLens Eq. 5: h^(l+gap) <- h^(l+gap) + lam * h^(l); returns the addition lam * h^(l)."""
    return lam * h_source


# ---- causal tracing -----------------------------------------------------------------------------------------


def recovery_rate(p_patched: Any, p_clean: float, p_corrupted: float) -> Any:
    """Causal-tracing recovery rate (p_patched - p_corrupted) / (p_clean - p_corrupted); NaN when
    p_clean == p_corrupted."""
    den = p_clean - p_corrupted
    if den == 0:
        return np.full_like(np.asarray(p_patched, dtype=float), math.nan)
    return (np.asarray(p_patched, dtype=float) - p_corrupted) / den


# ---- audio-specialist heads and steering --------------------------------------------------------------------


def audio_attention_mass(attn_from_last: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
    """Steering Eq. 1: m_h = sum_{j in audio} A_h[t*, j], from the final prompt position t*.

    ``attn_from_last``: (B, H, T) attention weights of the last query; ``audio_mask``: (B, T).  Returns (B, H)."""
    return (attn_from_last.float() @ audio_mask.float()[:, :, None]).squeeze(-1)


def specialist_correlations(mass: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Steering Eq. 2: r_h = corr(m_h, c), Pearson (= point-biserial for binary c) per head: (L, H).

    ``mass``: (N, L, H); ``correct``: (N,).  Heads with constant mass, or a constant ``correct``, get r = 0."""
    x = mass.double()
    y = correct.double()[:, None, None]
    xc = x - x.mean(0, keepdim=True)
    yc = y - y.mean(0, keepdim=True)
    num = (xc * yc).sum(0)
    sx, sy = (xc ** 2).sum(0), (yc ** 2).sum(0)
    # a constant column (up to rounding of its mean) has no correlation
    const = (sx <= 1e-12 * (x ** 2).sum(0).clamp(min=1e-300)) | (sy <= 0)
    den = torch.sqrt(sx * sy)
    r = torch.where(~const & (den > 0), num / den.clamp(min=1e-300), torch.zeros_like(num))
    return r.float()


def select_specialists(r: torch.Tensor, K: int) -> list[tuple[int, int]]:
    """The specialist set: top-K heads by |r_h| (ties broken by (layer, head) order); layers 1-based."""
    L, H = r.shape
    flat = r.abs().flatten()
    order = sorted(range(L * H), key=lambda i: (-float(flat[i]), i))[:K]
    return [(i // H + 1, i % H) for i in order]


def listening_score(mass: Any, r: Any, heads: Sequence[Sequence[int]]) -> np.ndarray:
    """Steering Eq. 3: s(x) = sum_{h in specialists} r_h m_h(x); ``mass`` (N, L, H), ``r`` (L, H)."""
    m = np.asarray(mass, dtype=float)
    s = np.zeros(m.shape[0])
    for l, h in heads:
        s += float(r[int(l) - 1, int(h)]) * m[:, int(l) - 1, int(h)]
    return s


def layer_weights(heads: Sequence[tuple[int, int]]) -> dict[int, float]:
    """Steering Eq. 4: the specialist layer set, with w_l = (number of specialist heads in layer l) / K."""
    counts: dict[int, int] = defaultdict(int)
    for l, _ in heads:
        counts[int(l)] += 1
    K = len(heads)
    return {l: c / K for l, c in sorted(counts.items())}


def layer_guided_direction(weights: Mapping[int, float], audio: Mapping[int, torch.Tensor],
                           silence: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Steering Eq. 5: d(x) = sum_l w_l (h_l^audio - h_l^silence) at the final prompt position (float32).

    ``audio[l]`` / ``silence[l]``: (B, d) residual states after block l of the audio / silence run."""
    d: torch.Tensor | None = None
    for l, w in weights.items():
        term = w * (audio[l].float() - silence[l].float())
        d = term if d is None else d + term
    if d is None:
        raise ValueError("layer_guided_direction: no layers given")
    return d


def final_layer_steering(h_final: torch.Tensor, direction: torch.Tensor, alpha: float) -> torch.Tensor:
    """Steering Eq. 6: h_L <- h_L + alpha d(x) (the output of the last block, before the final norm)."""
    return h_final + (alpha * direction).to(h_final.dtype).to(h_final.device)


def head_delta(audio_head: torch.Tensor, silence_head: torch.Tensor) -> torch.Tensor:
    """Steering Eq. 7: delta_{l,h} = o_{l,h}^audio - o_{l,h}^silence, head output before o_proj (float32)."""
    return audio_head.float() - silence_head.float()


def head_to_residual(delta: torch.Tensor, o_proj_weight: torch.Tensor, head: int, head_dim: int) -> torch.Tensor:
    """Steering Eq. 8: u_{l,h} = W_O[:, h] delta_{l,h}, the head's slice of o_proj; (B, D) -> (B, d)."""
    return delta @ o_proj_weight[:, head * head_dim:(head + 1) * head_dim].float().T


def head_steering_update(audio_heads: torch.Tensor, silence_heads: torch.Tensor, o_proj_weight: torch.Tensor,
                         heads: Sequence[int], head_dim: int, alpha: float) -> torch.Tensor:
    """Steering Eq. 9: a_l <- a_l + alpha sum_{h in S_l} u_{l,h}; returns the addition (B, d), float32.

    ``audio_heads`` / ``silence_heads``: (B, H, D) per-head outputs of layer l (unsteered passes)."""
    add = torch.zeros(audio_heads.shape[0], o_proj_weight.shape[0], dtype=torch.float32,
                      device=o_proj_weight.device)
    for h in heads:
        add += head_to_residual(head_delta(audio_heads[:, h], silence_heads[:, h]), o_proj_weight, h, head_dim)
    return alpha * add
