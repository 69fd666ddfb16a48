"""Remembers the ``--metadata`` our task loaders were called with in this process, so that the
model can build the matching calibration split of a task (lm-eval does not pass task metadata to
the model)."""

from __future__ import annotations

from typing import Any

_LAST: dict[str, Any] = {}

# keys that select a split; never carried over to a calibration run
SPLIT_KEYS = ("split",)


# Set by AudioLALM.__init__ (the model is created before lm-eval loads the tasks): True when that model will
# calibrate its intervention automatically on each task's calibration split, so the loaders' default split
# becomes "evaluation" instead of the full set (audio_tasks.data.splits.default_split).
_AUTO_CALIBRATION = {"pending": False}


def set_auto_calibration(pending: bool) -> None:
    _AUTO_CALIBRATION["pending"] = bool(pending)


def auto_calibration_pending() -> bool:
    return _AUTO_CALIBRATION["pending"]


def remember_metadata(metadata: dict[str, Any]) -> None:
    for k, v in metadata.items():
        if k in SPLIT_KEYS:
            continue
        if isinstance(v, (str, int, float, bool)) or v is None:
            _LAST[k] = v


def last_metadata() -> dict[str, Any]:
    return dict(_LAST)
