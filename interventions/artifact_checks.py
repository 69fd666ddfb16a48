"""Validation of a calibration artifact's content when it is loaded (``calibrate.load_artifact``).

Strengths must be finite numbers, layers and heads in range for the model (layers 1..L, heads
(1..L, 0..H-1)), specialist lists non-empty. An invalid artifact is a ``ValueError`` naming the file
and the key (e.g. ``calibration.json: key 'layer_guided.alpha' is nan; expected a finite number``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["validate_artifact"]

STRENGTH_KEYS = (("enrich", "lam"), ("layer_guided", "alpha"), ("single_layer", "alpha"), ("head", "alpha"))


def _err(path, key: str, what: str) -> ValueError:
    return ValueError(f"calibration artifact {path}: key '{key}' {what}")


def _finite(path, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(path, key, f"is {v!r}; expected a finite number")
    if not math.isfinite(float(v)):
        raise _err(path, key, f"is {v!r}; expected a finite number")
    return float(v)


def _layer(path, key: str, v: Any, L: int | None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, str) and v.strip().isdigit()):
        raise _err(path, key, f"is {v!r}; expected a layer number")
    v = int(v)
    if L is not None and not 1 <= v <= L:
        raise _err(path, key, f"is layer {v}, out of range 1..{L}")
    return v


def _heads(path, key: str, heads: Any, L: int | None, H: int | None, non_empty: bool) -> None:
    if not isinstance(heads, list) or (non_empty and not heads):
        raise _err(path, key, f"is {heads!r}; expected a non-empty list of [layer, head] pairs")
    for n, h in enumerate(heads):
        if not (isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(x, int) for x in h)):
            raise _err(path, f"{key}[{n}]", f"is {h!r}; expected a [layer, head] pair")
        if (L is not None and not 1 <= h[0] <= L) or (H is not None and not 0 <= h[1] < H):
            raise _err(path, f"{key}[{n}]",
                       f"is head {list(h)}, out of range (layers 1..{L}, heads 0..{H - 1 if H else '?'})")


def _check_strengths(doc: dict[str, Any], path) -> None:
    """Each intervention block's strength and its sweep (finite strengths and accuracies)."""
    for sec, key in STRENGTH_KEYS:
        block = doc.get(sec)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise _err(path, sec, f"is {block!r}; expected an object")
        if key in block:
            _finite(path, f"{sec}.{key}", block[key])
        for a, acc in (block.get("sweep") or {}).items():
            try:
                fa = float(a)
            except ValueError:
                raise _err(path, f"{sec}.sweep", f"has strength {a!r}; expected a number") from None
            if not math.isfinite(fa):
                raise _err(path, f"{sec}.sweep", f"has strength {a!r}; expected a finite number")
            if acc is not None:
                _finite(path, f"{sec}.sweep.{a}", acc)


def _check_enrich(e: dict[str, Any], path, L: int | None) -> None:
    """The enrich block's source layer and gap (source + gap within the L layers)."""
    if "source_layer" in e:
        src = _layer(path, "enrich.source_layer", e["source_layer"], L)
        gap = e.get("gap", 0)
        if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
            raise _err(path, "enrich.gap", f"is {gap!r}; expected an integer >= 0")
        if L is not None and src + gap > L:
            raise _err(path, "enrich.source_layer", f"+ gap = {src + gap} exceeds the {L} layers")


def validate_artifact(doc: dict[str, Any], path, num_layers: int | None = None, num_heads: int | None = None) -> None:
    """Raise ``ValueError`` naming ``path`` and the key on the first invalid entry (module docstring)."""
    L = num_layers if num_layers is not None else doc.get("num_layers")
    H = num_heads if num_heads is not None else doc.get("num_heads")
    L = int(L) if isinstance(L, int) else None
    H = int(H) if isinstance(H, int) else None
    _check_strengths(doc, path)
    if isinstance(doc.get("enrich"), dict):
        _check_enrich(doc["enrich"], path, L)
    if isinstance(doc.get("single_layer"), dict) and "layer" in doc["single_layer"]:
        _layer(path, "single_layer.layer", doc["single_layer"]["layer"], L)
    hs = doc.get("heads")
    if hs is not None:
        if not isinstance(hs, dict):
            raise _err(path, "heads", f"is {hs!r}; expected an object")
        if "specialists" in hs or any(k in doc for k in ("layer_guided", "head")):
            _heads(path, "heads.specialists", hs.get("specialists"), L, H, non_empty=True)
        if "ranking" in hs:
            _heads(path, "heads.ranking", hs["ranking"], L, H, non_empty=True)
        for l, w in (hs.get("layer_weights") or {}).items():
            _layer(path, f"heads.layer_weights.{l}", l, L)
            _finite(path, f"heads.layer_weights.{l}", w)
