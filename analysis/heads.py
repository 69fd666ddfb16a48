"""Audio-specialist heads and the listening score (Glazer, Aharon & Fetaya, Sec. 4.1 and 6).

* Audio attention mass of head (l, h): the attention weight from the final prompt position to the audio
  positions, summed (``interventions.calibrate.collect``'s ``attn_mass``, eager attention).
* Specialists: on the calibration split, the point-biserial (= Pearson with a 0/1 variable) correlation r_h
  between a head's mass and correctness (first-token argmax over the choices == gold), top-K by |r_h|
  (``interventions.formulas``: Eq. numbers of the steering paper there).
* Listening score ``s(x) = sum_{h in specialists} r_h * mass_h(x)`` on the evaluation split, with
  (i) its ROC AUC for correctness against matched random-head sets (same K, r_h-weighted the same way, seeds
  0..n-1 through ``audio_tasks.calibration.random_heads``: mean and std), and
  (ii) the flip test: is s(x) higher where the prediction (argmax of the choices' first-token log-probs)
  differs between the audio run and the matched-duration silence run?  Mann-Whitney U (scipy), two-sided and
  one-sided ("greater") p-values; U is the statistic of the flipped group.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from analysis import stats
from analysis.stats import roc_auc
from interventions import formulas
from interventions.formulas import listening_score

__all__ = ["head_correlations", "listening_score", "roc_auc", "random_head_aucs", "flip_test", "heads_summary",
           "records_from_collect"]


def head_correlations(mass: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(L, H) point-biserial r of each head's audio mass with correctness (0 for constant inputs)."""
    return formulas.specialist_correlations(torch.as_tensor(np.asarray(mass, dtype=np.float64)),
                                 torch.as_tensor(np.asarray(correct, dtype=bool))).double().numpy()


def random_head_aucs(mass: np.ndarray, r: np.ndarray, correct: np.ndarray, K: int, n: int) -> list[float]:
    """AUC of the r-weighted score over random head sets of size K, seeds 0..n-1."""
    from audio_tasks.calibration import random_heads

    L, H = r.shape
    return [roc_auc(listening_score(mass, r, random_heads(L, H, K, seed)), correct) for seed in range(n)]


def flip_test(score: np.ndarray, flip: np.ndarray) -> dict[str, Any]:
    """Mann-Whitney U of s(x) on flipped vs not-flipped items."""
    s = np.asarray(score, dtype=float)
    f = np.asarray(flip, dtype=bool)
    a, b = s[f], s[~f]
    out: dict[str, Any] = {"n_flip": int(a.size), "n_stable": int(b.size),
                           "mean_flip": float(a.mean()) if a.size else None,
                           "mean_stable": float(b.mean()) if b.size else None,
                           "U": None, "p_two_sided": None, "p_greater": None, "auc": None}
    if a.size == 0 or b.size == 0:
        out["note"] = "one group is empty"
        return out
    if np.all(s == s[0]):
        out.update(U=a.size * b.size / 2.0, p_two_sided=1.0, p_greater=1.0, auc=0.5, note="constant scores")
        return out
    two = stats.mannwhitney(a, b)
    gr = stats.mannwhitney(a, b, alternative="greater")
    out.update(U=two.statistic, p_two_sided=two.pvalue, p_greater=gr.pvalue, auc=two.auc)
    return out


def records_from_collect(data: Any, items: Sequence[Any]) -> list[dict[str, Any]]:
    """Per-item JSON-able records from a ``CalibrationData`` (attention + silence runs)."""
    recs = []
    for i, it in enumerate(items):
        C = len(it.continuations)
        la = data.lens[i, -1, :C].double()
        ls = data.silence_logp[i, :C].double()
        golds = data.golds[i] if getattr(data, "golds", None) is not None else [int(data.gold[i])]
        recs.append({"gold": int(data.gold[i]), "golds": [int(g) for g in golds], "pred": int(la.argmax()),
                     "pred_silence": int(ls.argmax()), "correct": int(la.argmax()) in golds,
                     "flip": bool(int(la.argmax()) != int(ls.argmax())),
                     "logp_audio": [float(x) for x in la], "logp_silence": [float(x) for x in ls],
                     "mass": data.attn_mass[i].double().tolist()})
    return recs


def heads_summary(cal: Sequence[dict[str, Any]], ev: Sequence[dict[str, Any]], K: int = 20,
                  n_random: int = 10) -> dict[str, Any]:
    """Specialists from the calibration records, listening-score checks on the evaluation records."""
    from scipy.stats import pointbiserialr

    if not cal:
        raise ValueError("no calibration records")
    mass_c = np.asarray([r["mass"] for r in cal], dtype=float)
    corr_c = np.asarray([r["correct"] for r in cal], dtype=bool)
    L, H = mass_c.shape[1:]
    r = head_correlations(mass_c, corr_c)
    K = min(int(K), L * H)
    heads = formulas.select_specialists(torch.as_tensor(r), K)
    spec = []
    for l, h in heads:
        x = mass_c[:, l - 1, h]
        p = None
        if corr_c.any() and (~corr_c).any() and not np.all(x == x[0]):
            p = float(pointbiserialr(corr_c.astype(float), x).pvalue)
        spec.append({"layer": int(l), "head": int(h), "r": float(r[l - 1, h]), "p": p,
                     "mean_mass": float(x.mean())})
    out: dict[str, Any] = {"num_layers": int(L), "num_heads": int(H), "K": K,
                           "calibration": {"n": len(cal), "accuracy": float(corr_c.mean())},
                           "specialists": spec, "r": r.tolist(), "mean_mass": mass_c.mean(0).tolist(),
                           "layer_counts": {str(l): sum(1 for a, _ in heads if a == l)
                                            for l in sorted({a for a, _ in heads})}}
    if not ev:
        return out
    mass_e = np.asarray([x["mass"] for x in ev], dtype=float)
    corr_e = np.asarray([x["correct"] for x in ev], dtype=bool)
    flip_e = np.asarray([x["flip"] for x in ev], dtype=bool)
    score = listening_score(mass_e, r, heads)
    rand = random_head_aucs(mass_e, r, corr_e, K, n_random) if n_random > 0 else []
    finite = [a for a in rand if not math.isnan(a)]
    out["evaluation"] = {
        "n": len(ev), "accuracy": float(corr_e.mean()), "n_flip": int(flip_e.sum()),
        "auc": roc_auc(score, corr_e),
        "random_auc": {"seeds": list(range(n_random)), "values": rand,
                       "mean": float(np.mean(finite)) if finite else None,
                       "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None},
        "flip_test": flip_test(score, flip_e),
        "score_mean_correct": float(score[corr_e].mean()) if corr_e.any() else None,
        "score_mean_incorrect": float(score[~corr_e].mean()) if (~corr_e).any() else None,
    }
    out["evaluation_scores"] = [float(x) for x in score]
    return out
