"""Critical layers (AudioLens Eqs. 3-4, Tables II-III; computed by ``interventions.formulas``).

``s^l = max(0, I^l - (1 + alpha) / |Y|)`` for l = 1..L and ``l* = sum_l s^l l / sum_l s^l`` (NaN when every
``s^l`` is 0).  Rows are (model, track, prompt format) with the accuracy ``I^L`` at the last position;
Table II averages rows over prompt formats, Table III correlates critical layer and accuracy across the
rows of each model (Pearson, ``analysis.stats.pearson``), optionally without one track ("excluding gender").
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from analysis import stats
from interventions import formulas

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
    """Contributions s^l for layers 1..L (``formulas.critical_contributions``); ``info`` holds l = 0..L."""
    return formulas.critical_contributions(info, n_labels, alpha)


def critical_layer(info: Sequence[float], n_labels: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Critical layer (``formulas.critical_layer``); NaN when all contributions are 0."""
    return formulas.critical_layer(info, n_labels, alpha)


@dataclass
class CriticalRow:
    """One (model, task, position) row of the critical-layer analysis."""
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
    """Pearson correlation (``analysis.stats.pearson``) between critical layers and accuracies over ``rows``
    (rows with a NaN critical layer and rows of ``exclude_tracks`` are left out)."""
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
    res["r"], res["pvalue"] = stats.pearson(x, y)
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
