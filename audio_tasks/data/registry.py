"""Task metadata carried explicitly to the model: lm-eval does not pass a task's ``--metadata`` to the model,
so our dataset loaders stamp every document with it (``task_metadata``, a JSON string of the scalar
metadata minus the split keys) and the model reads it from the requests' docs to build the matching
calibration split of a task.

The other direction needs no state either: lm-eval merges the model arguments into every task's metadata
(``model_args | --metadata``, in ``simple_evaluate`` and the ``lm_eval`` CLI), so a loader sees whether the
``audio_lalm`` model of the run calibrates its intervention automatically (:func:`auto_calibration_pending`)
and then defaults to the evaluation split.  A caller that builds its own ``TaskManager`` passes the model
arguments in its metadata the same way (``AudioLALM.task_metadata()``)."""

from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["SPLIT_KEYS", "DOC_KEY", "calibration_metadata", "stamp_metadata", "doc_metadata",
           "auto_calibration_pending"]

# keys that select a split; never carried over to a calibration run
SPLIT_KEYS = ("split",)
DOC_KEY = "task_metadata"


def auto_calibration_pending(metadata: Mapping[str, Any]) -> bool:
    """Whether the task metadata (which carries the model arguments, see the module docstring) names an
    ``audio_lalm`` intervention that is calibrated automatically on each task's calibration split:
    ``steer=...`` without ``calibration=DIR`` and without the parameters that fix it alone
    (:attr:`interventions.config.SteerConfig.explicit`).  Then the loaders' default split is "evaluation"
    instead of the full set (:func:`audio_tasks.data.splits.default_split`)."""
    if str(metadata.get("steer") or "none").strip().lower() == "none":
        return False
    from interventions.config import STEER_KEYS, SteerConfig

    cfg = SteerConfig.from_kwargs({k: metadata[k] for k in STEER_KEYS if k in metadata})
    return not cfg.calibration and not cfg.explicit


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
