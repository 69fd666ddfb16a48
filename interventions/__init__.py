"""Model-agnostic engine, interventions and calibration for large audio-language models.

Public seams (imported lazily, so ``import interventions.config`` stays light):

* :func:`load_engine` (:mod:`interventions.loader`): the engine for a checkpoint, no lm-eval object;
* :mod:`interventions.formulas`: one home per paper equation;
* :class:`Intervention` (:mod:`interventions.steering`): what ``score_items`` calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loader import load_engine
    from .steering import Intervention

__all__ = ["load_engine", "Intervention"]


def __getattr__(name: str) -> Any:
    if name == "load_engine":
        from .loader import load_engine

        return load_engine
    if name == "Intervention":
        from .steering import Intervention

        return Intervention
    raise AttributeError(f"module 'interventions' has no attribute {name!r}")
