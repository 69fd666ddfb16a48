"""Critical layers (AudioLens Eq. 3-4, Tables II-III).

``s^l = max(0, I^l - (1 + alpha) / |Y|)`` for l = 1..L and ``l* = sum_l s^l l / sum_l s^l`` (NaN when every
``s^l`` is 0).  Rows are (model, track, prompt format) with the accuracy ``I^L`` at the last position;
Table II averages rows over prompt formats, Table III correlates critical layer and accuracy across the
rows of each model (Pearson, ``scipy.stats.pearsonr``), optionally without one track ("excluding gender").
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["critical_layer", "contributions", "CriticalRow", "parse_task", "table_ii", "correlation",
           "table_iii", "DEFAULT_ALPHA"]

DEFAULT_ALPHA = 0.2

_SAKURA = re.compile(r"^(?:sakura|demo)_(?P<track>[a-z]+?)(?:_(?P<fmt>p1|p2|p3|single|multi))?$")


def parse_task(task: str) -> tuple[str, str]:
    """(track, prompt format) of a task name: ``sakura_gender`` -> (gender, p3), ``sakura_gender_p1`` ->
    (gender, p1), ``demo_gender`` (synthetic SAKURA-format, P3) -> (gender, p3); other tasks -> (task, "")."""
    m = _SAKURA.match(task)
    if not m:
        return task, ""
    return m.group("track"), m.group("fmt") or "p3"


def contributions(info: Sequence[float], n_labels: int, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Eq. 3 for layers 1..L.  ``info`` holds I^l for l = 0..L (entry 0, the embeddings, is ignored)."""
    I = np.asarray(info, dtype=float)[1:]
    return np.maximum(0.0, I - (1.0 + alpha) / n_labels)


def critical_layer(info: Sequence[float], n_labels: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Eq. 4: contribution-weighted mean layer index (layers 1..L); NaN when all contributions are 0."""
    s = contributions(info, n_labels, alpha)
    tot = float(s.sum())
    if not tot > 0:
        return math.nan
    layers = np.arange(1, s.shape[0] + 1, dtype=float)
    return float((s * layers).sum() / tot)


@dataclass
class CriticalRow:
    model: str
    task: str
    track: str
    prompt: str
    position: str
    accuracy: float  # I^L at the last position (the model's first-token accuracy)
    critical_layer: float
    n: int
    n_labels: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["critical_layer"], float) and math.isnan(d["critical_layer"]):
            d["critical_layer"] = None
        return d


def table_ii(rows: Iterable[CriticalRow]) -> list[dict[str, Any]]:
    """Table II: critical layer and accuracy per (model, track, position), averaged over prompt formats
    (NaN critical layers are left out of the average; ``n_formats`` counts the rows used)."""
    groups: dict[tuple[str, str, str], list[CriticalRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.track, r.position), []).append(r)
    out = []
    for (model, track, pos), rs in groups.items():
        cl = [r.critical_layer for r in rs if not math.isnan(r.critical_layer)]
        out.append({"model": model, "track": track, "position": pos,
                    "critical_layer": float(np.mean(cl)) if cl else None,
                    "accuracy": float(np.mean([r.accuracy for r in rs])),
                    "prompts": sorted(r.prompt for r in rs), "n_formats": len(cl)})
    return out


def correlation(rows: Sequence[CriticalRow], exclude_tracks: Sequence[str] = ()) -> dict[str, Any]:
    """Pearson correlation (scipy.stats.pearsonr) between critical layers and accuracies over ``rows``
    (rows with a NaN critical layer and rows of ``exclude_tracks`` are left out)."""
    from scipy.stats import pearsonr

    ex = {t.lower() for t in exclude_tracks}
    use = [r for r in rows if r.track.lower() not in ex and not math.isnan(r.critical_layer)]
    res: dict[str, Any] = {"n": len(use), "exclude_tracks": sorted(ex), "r": None, "pvalue": None}
    if len(use) < 3:
        res["note"] = "fewer than 3 rows"
        return res
    x = np.array([r.critical_layer for r in use])
    y = np.array([r.accuracy for r in use])
    if np.all(x == x[0]) or np.all(y == y[0]):
        res["note"] = "constant input"
        return res
    pr = pearsonr(x, y)
    res["r"], res["pvalue"] = float(pr.statistic), float(pr.pvalue)
    return res


def table_iii(rows: Sequence[CriticalRow], position: str = "last",
              exclude_tracks: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Table III: per model, the correlation over its (track x prompt format) rows at ``position``; with
    ``exclude_tracks`` an extra row per model without those tracks."""
    out = []
    models = sorted({r.model for r in rows})
    for m in models:
        rs = [r for r in rows if r.model == m and r.position == position]
        out.append({"model": m, "position": position, **correlation(rs)})
        if exclude_tracks:
            out.append({"model": m, "position": position, **correlation(rs, exclude_tracks)})
    return out
