"""Parsing and validation of the intervention arguments given in ``--model_args``.

    steer=none|enrich|layer_guided|single_layer|head
    alpha=FLOAT (lam=FLOAT is an alias, AudioLens' name for enrich)     strength
    source_layer=INT  gap=INT (default 5)                                 enrich
    K=INT (default 20)                                                   specialist heads
    layers=[10,12] | 10;12        heads=[[10,3],[12,1]] | 10:3;12:1      explicit overrides
    calibration=DIR                                                       calibration artifact
    control=random  seed=INT                                              random control
    alphas=0;0.5;1;2                                                      strength grid for calibration

Everything is validated here, before any model is loaded or any forward pass runs.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SteerConfig", "STEER_KINDS", "parse_int_list", "parse_heads"]

STEER_KINDS = ("none", "enrich", "layer_guided", "single_layer", "head")
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
STEER_KEYS = ("steer", "alpha", "lam", "source_layer", "gap", "K", "k", "layers", "heads", "calibration",
              "control", "seed", "alphas")
# Arguments that only mean something for an intervention (or for calibrating one, see ``calibrating``).
INTERVENTION_ONLY = ("alpha", "lam", "source_layer", "gap", "K", "k", "layers", "heads", "calibration", "control",
                     "seed", "alphas")
CALIBRATION_ARGS = ("K", "k", "gap", "seed", "alphas")


def _literal(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip()
        if s.startswith(("[", "(")):
            try:
                return ast.literal_eval(s)
            except (ValueError, SyntaxError):
                raise ValueError(f"cannot parse {v!r}") from None
    return v


def parse_int_list(v: Any, name: str) -> list[int]:
    """Parse ``v`` (int, list or separated string) as a list of ints; ``name`` is used in errors."""
    v = _literal(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if isinstance(v, str):
        v = [p for p in re.split(r"[;\s|]+", v.strip()) if p]
    try:
        out = [int(x) for x in v]  # pyright: ignore[reportGeneralTypeIssues]  (a bool: TypeError, reported below)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a list of integers like [10,12] or 10;12, got {v!r}") from None
    return out


def parse_float_list(v: Any, name: str) -> list[float]:
    v = _literal(v)
    if isinstance(v, (int, float)):
        v = [v]
    if isinstance(v, str):
        v = [p for p in re.split(r"[;\s|]+", v.strip()) if p]
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected numbers like 0;0.5;1, got {v!r}") from None
    if not out:
        raise ValueError(f"{name}: the strength grid is empty; give at least one value like 0;0.5;1")
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"{name}: strengths must be finite, got {v!r}")
    return out


def parse_heads(v: Any) -> list[tuple[int, int]]:
    """Parse ``v`` as a list of (layer, head) pairs."""
    v = _literal(v)
    if isinstance(v, str):
        pairs = []
        for p in re.split(r"[;\s|]+", v.strip()):
            if not p:
                continue
            m = re.fullmatch(r"(\d+)[:.](\d+)", p)
            if not m:
                raise ValueError(f"heads: expected LAYER:HEAD pairs like 10:3;12:1 or [[10,3],[12,1]], got {p!r}")
            pairs.append((int(m.group(1)), int(m.group(2))))
        return pairs
    try:
        return [(int(a), int(b)) for a, b in v]
    except (TypeError, ValueError):
        raise ValueError(f"heads: expected pairs like [[10,3],[12,1]], got {v!r}") from None


def _int(v: Any, name: str) -> int:
    """An integer argument; a clear error naming the argument otherwise."""
    if isinstance(v, bool):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {v!r}") from None


def _finite(v: Any, name: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return f


def _parse_alpha(kw: dict[str, Any]) -> float | None:
    """The strength ``alpha`` or its alias ``lam`` (not both); None when neither is given."""
    if "alpha" in kw and "lam" in kw:
        raise ValueError("give either alpha or lam (an alias), not both")
    a = kw.get("alpha", kw.get("lam"))
    return None if a is None else _finite(a, "alpha" if "alpha" in kw else "lam")


def _parse_control(v: Any) -> str | None:
    """The ``control`` argument: ``random``, or None for ``none``."""
    control = str(v).strip().lower()
    if control not in ("random", "none"):
        raise ValueError(f"control={control!r}; valid: random, none")
    return None if control == "none" else control


def _reject_unused(kw: dict[str, Any], calibrating: bool) -> None:
    """With steer=none, refuse intervention arguments that would be ignored (calibration ones allowed when
    calibrating)."""
    allowed = CALIBRATION_ARGS if calibrating else ()
    given = [x for x in INTERVENTION_ONLY if x not in allowed and kw.get(x) not in (None, "")]
    if given:
        raise ValueError(f"intervention argument(s) {', '.join(given)} given but steer=none, where they "
                         "would be ignored; set steer=" + "|".join(STEER_KINDS[1:]) + " or drop them")


@dataclass
class SteerConfig:
    """The steering options of ``audio_lalm`` model arguments."""
    steer: str = "none"
    alpha: float | None = None
    source_layer: int | None = None
    gap: int = 5
    K: int = 20
    layers: list[int] | None = None
    heads: list[tuple[int, int]] | None = None
    calibration: str | None = None
    control: str | None = None
    seed: int = 0
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    k_given: bool = False  # the default K is clamped to the head count of small models
    gap_given: bool = False  # with calibration=DIR and no gap=, the artifact's own gap is used

    @classmethod
    def from_kwargs(cls, kw: dict[str, Any], *, calibrating: bool = False) -> "SteerConfig":
        """Parse ``kw``.  ``calibrating``: the model is loaded to calibrate (``python -m analysis
        calibrate``), where K, gap, seed and alphas configure the calibration with ``steer=none``."""
        steer = str(kw.get("steer", "none") or "none").strip().lower()
        if steer not in STEER_KINDS:
            raise ValueError(f"steer={steer!r} is not a known intervention; valid: {', '.join(STEER_KINDS)}")
        c = cls(steer=steer)
        c.alpha = _parse_alpha(kw)
        if kw.get("source_layer") is not None:
            c.source_layer = _int(kw["source_layer"], "source_layer")
        if kw.get("gap") is not None:
            c.gap = _int(kw["gap"], "gap")
            c.gap_given = True
            if c.gap < 0:
                raise ValueError(f"gap must be >= 0, got {c.gap}")
        k = kw.get("K", kw.get("k"))
        if k is not None:
            c.K = _int(k, "K" if "K" in kw else "k")
            c.k_given = True
            if c.K < 1:
                raise ValueError(f"K must be >= 1, got {c.K}")
        if kw.get("layers") is not None:
            c.layers = parse_int_list(kw["layers"], "layers")
        if kw.get("heads") is not None:
            c.heads = parse_heads(kw["heads"])
        if kw.get("calibration"):
            c.calibration = str(kw["calibration"])
        if kw.get("control"):
            c.control = _parse_control(kw["control"])
        if kw.get("seed") is not None:
            c.seed = _int(kw["seed"], "seed")
        if kw.get("alphas") is not None:
            c.alphas = parse_float_list(kw["alphas"], "alphas")
        if c.steer == "none":
            _reject_unused(kw, calibrating)
        return c

    def validate_against(self, num_layers: int, num_heads: int) -> None:
        """Range checks once the model's layer/head counts are known (before any forward)."""
        L, H = num_layers, num_heads
        if self.layers is not None:
            bad = [l for l in self.layers if not 1 <= l <= L]
            if bad:
                raise ValueError(f"layers {bad} out of range: valid layers are 1..{L}")
        if self.heads is not None:
            bad = [h for h in self.heads if not (1 <= h[0] <= L and 0 <= h[1] < H)]
            if bad:
                raise ValueError(f"heads {bad} out of range: valid heads are (1..{L}, 0..{H - 1})")
        if self.source_layer is not None:
            if L - self.gap < 1:
                raise ValueError(f"source_layer={self.source_layer}: with gap {self.gap} a model with {L} layers has "
                                 f"no valid source layer (the target layer source_layer+gap must be <= {L}); "
                                 f"give a gap in 0..{L - 1}")
            if not 1 <= self.source_layer <= L - self.gap:
                raise ValueError(f"source_layer {self.source_layer} out of range: with gap {self.gap} "
                                 f"it must be in 1..{L - self.gap}")
        uses_artifact_gap = self.calibration and not self.gap_given and self.source_layer is None
        if self.steer == "enrich" and self.gap > L - 1 and not uses_artifact_gap:
            raise ValueError(f"gap {self.gap} too large for a model with {L} layers")
        if self.steer in ("layer_guided", "head") and self.heads is None and self.k_given and self.K > L * H:
            raise ValueError(f"K={self.K} exceeds the number of heads ({L * H})")

    @property
    def explicit(self) -> bool:
        """True when the arguments alone fix the intervention (no calibration artifact needed)."""
        if self.steer == "none":
            return True
        if self.alpha is None:
            return False
        selection = {
            "enrich": self.source_layer is not None or self.control == "random",
            "layer_guided": self.heads is not None or self.layers is not None or self.control == "random",
            "head": self.heads is not None or self.control == "random",
            "single_layer": self.layers is not None and len(self.layers) == 1,
        }
        return selection[self.steer]

    def fingerprint(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k not in ("k_given", "gap_given")}
