"""Task metadata carried explicitly to the model: lm-eval does not pass a task's ``--metadata`` to the model,
so our dataset loaders stamp every document with it (``task_metadata``, a JSON string of the scalar
metadata minus the split keys) and the model reads it from the requests' docs to build the matching
calibration split of a task.  One piece of module state remains: ``_AUTO_CALIBRATION`` (below)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SPLIT_KEYS", "DOC_KEY", "calibration_metadata", "stamp_metadata", "doc_metadata", "set_auto_calibration",
           "auto_calibration_pending"]

# keys that select a split; never carried over to a calibration run
SPLIT_KEYS = ("split",)
DOC_KEY = "task_metadata"


# Set by AudioLALM.__init__ (the model is created before lm-eval loads the tasks): True when that model will
# calibrate its intervention automatically on each task's calibration split, so the loaders' default split
# becomes "evaluation" instead of the full set (audio_tasks.data.splits.default_split).
_AUTO_CALIBRATION = {"pending": False}


def set_auto_calibration(pending: bool) -> None:
    """Record whether automatic calibration is pending."""
    _AUTO_CALIBRATION["pending"] = bool(pending)


def auto_calibration_pending() -> bool:
    """Whether automatic calibration is pending."""
    return _AUTO_CALIBRATION["pending"]


def calibration_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The scalar metadata items that a calibration run of the same task reuses (split keys dropped)."""
    return {k: v for k, v in metadata.items()
            if k not in SPLIT_KEYS and (isinstance(v, (str, int, float, bool)) or v is None)}


def stamp_metadata(splits: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """``{split: datasets.Dataset}`` with a ``task_metadata`` column (see the module docstring)."""
    text = json.dumps(calibration_metadata(metadata), sort_keys=True)
    return {k: (ds.add_column(DOC_KEY, [text] * len(ds)) if DOC_KEY not in ds.column_names else ds)
            for k, ds in splits.items()}


def doc_metadata(doc: Any) -> dict[str, Any]:
    """The task metadata stamped on ``doc`` ({} for docs of other loaders)."""
    if isinstance(doc, dict) and isinstance(doc.get(DOC_KEY), str):
        return dict(json.loads(doc[DOC_KEY]))
    return {}
