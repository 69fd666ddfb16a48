"""What a steered run applied, on the record (results JSON, log), and the never-a-NaN guard.

``intervention_record`` builds, per task, the summary written into lm-eval's results JSON
(``results["config"]["audio_lalm"]["interventions"][task]``, via ``AudioLALM.get_model_info``):

* ``kind``, ``strength_name`` (``alpha`` / ``lam``), ``strength``, ``strength_source`` (``argument`` |
  ``calibration``), ``layers`` with their ``weights``, ``heads``, ``source_layer`` / ``gap`` (enrich), ``K``,
  ``control`` / ``seed``;
* ``artifact`` (the path of ``calibration=DIR`` or of the automatic calibration's cache folder) and
  ``cache_key`` (automatic calibration only);
* ``calibration``: split name, number of calibration docs, tasks, and the ``sweep`` (accuracy per strength,
  with ``n``) of this kind from the artifact;
* ``evaluation``: filled by the model after scoring: number of docs scored and their split membership.

``check_finite`` refuses a non-finite score naming the task, the doc and the intervention settings.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["NonFiniteScore", "check_finite", "intervention_record", "log_record", "RunRecord"]

_STRENGTH_KEY = {"enrich": "lam", "layer_guided": "alpha", "single_layer": "alpha", "head": "alpha"}


class NonFiniteScore(ValueError):
    """A score that is NaN or infinite."""
    pass


def _section(art: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return dict((art or {}).get(kind) or {})


def intervention_record(cfg, iv, art: dict[str, Any] | None, *, source: str, cache_key: str | None = None
                        ) -> dict[str, Any]:
    """The record of intervention ``iv`` (built from ``cfg`` and artifact ``art``); ``source`` is
    ``"arguments"``, ``"calibration artifact"`` or ``"automatic calibration"``."""
    kind = cfg.steer
    desc = dict(iv.describe()) if iv is not None and hasattr(iv, "describe") else {}
    skey = _STRENGTH_KEY.get(kind, "alpha")
    strength = desc.get("lam", desc.get("alpha"))
    rec: dict[str, Any] = {"kind": kind, "source": source, "strength_name": skey,
                           "strength": None if strength is None else float(strength),
                           "strength_source": "argument" if cfg.alpha is not None else "calibration"}
    if "weights" in desc:
        rec["layers"] = [int(k) for k in desc["weights"]]
        rec["weights"] = {str(k): float(v) for k, v in desc["weights"].items()}
    if desc.get("heads") is not None and kind in ("layer_guided", "head"):
        rec["heads"] = [list(map(int, h)) for h in desc["heads"]]
        rec["K"] = len(rec["heads"])
    if kind == "enrich":
        for k in ("source_layer", "gap"):
            if k in desc:
                rec[k] = desc[k]
        if "source_layer" in desc and "gap" in desc and desc["source_layer"] is not None:
            rec["layers"] = [int(desc["source_layer"]), int(desc["source_layer"]) + int(desc["gap"])]
    if cfg.control:
        rec["control"], rec["seed"] = cfg.control, cfg.seed
    if art is not None:
        meta = dict(art.get("meta") or {})
        rec["artifact"] = art.get("_path")
        sweep = _section(art, kind).get("sweep") or {}
        n = art.get("n_docs") or len(meta.get("clip_ids") or []) or None
        rec["calibration"] = {
            "split": meta.get("split", "calibration"), "n_docs": n, "tasks": meta.get("tasks"),
            "split_seed": meta.get("split_seed"),
            "selected": {k: v for k, v in _section(art, kind).items() if k not in ("sweep", "per_layer_best")},
            "sweep": [{"strength": float(a), "accuracy": None if acc is None else float(acc), "n": n}
                      for a, acc in sorted(sweep.items(), key=lambda kv: float(kv[0]))],
        }
    if cache_key is not None:
        rec["cache_key"] = cache_key
    return rec


def strength_is_zero_from_calibration(rec: dict[str, Any]) -> bool:
    return rec.get("strength_source") == "calibration" and rec.get("strength") == 0.0


def log_record(task: str, rec: dict[str, Any]) -> None:
    """One INFO line with the record; a WARNING when calibration selected a strength of 0."""
    shown = {k: v for k, v in rec.items() if not k.startswith("_")}
    log.info("audio_lalm: task %s applies %s", task, json.dumps(shown, sort_keys=True, default=str))
    if strength_is_zero_from_calibration(rec):
        name = rec.get("strength_name", "alpha")
        grid = [s["strength"] for s in (rec.get("calibration") or {}).get("sweep", [])]
        log.warning("audio_lalm: calibration selected %s = 0 for steer=%s on task %s (sweep over %s): the "
                    "intervention is the identity on this data and the results equal the unsteered run. To "
                    "force a strength, pass %s=<value> in --model_args (e.g. steer=%s,alpha=1).",
                    name, rec.get("kind"), task, grid or "the strength grid", "alpha" if name == "alpha" else
                    "alpha= (or lam=)", rec.get("kind"))


def check_finite(task: str, items, scores, settings: str) -> None:
    """Raise :class:`NonFiniteScore` on the first doc with a NaN/inf log-prob (before any metric)."""
    for it, sc in zip(items, scores):
        vals = list(sc.loglik) + list(sc.first)
        if not all(math.isfinite(float(v)) for v in vals):
            doc = it.meta.get("doc")
            did = (doc.get("doc_id") if isinstance(doc, dict) and doc.get("doc_id") is not None
                   else it.meta.get("doc_id"))
            raise NonFiniteScore(
                f"audio_lalm: non-finite score on task {task!r}, doc {did!r} (lm-eval doc index "
                f"{it.meta.get('doc_id')}) with intervention {settings}: log-probs {list(map(float, sc.loglik))}. "
                "No accuracy is computed from NaN/inf; lower the strength (alpha=/lam=) or check the "
                "calibration artifact.")


class RunRecord:
    """What one ``audio_lalm`` run applied and scored, per task: the intervention records (written by
    :class:`audio_tasks.calibration.TaskInterventions`) and the docs scored by split membership.  Read by
    ``AudioLALM.get_model_info`` into lm-eval's results JSON."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}  # per task ("*": the same for every task)
        self.evaluated: dict[str, dict[str, int]] = {}  # per task: docs scored, by split membership
        self._overlap_warned: set[str] = set()

    def model_info(self, steer: str) -> dict[str, Any]:
        """Per task: the intervention applied (kind, strength, layers/weights, heads, artifact, calibration
        split and sweep; ``steer`` where none was recorded) and the docs scored (``evaluation``)."""
        per_task = {}
        for t in sorted((set(self.records) - {"*"}) | set(self.evaluated)):
            rec = {k: v for k, v in (self.records.get(t) or self.records.get("*") or {"kind": steer}
                                     ).items() if not k.startswith("_")}
            ev = self.evaluated.get(t, {})
            splits = sorted(k for k in ev if ev[k])
            rec["evaluation"] = {"split": splits[0] if len(splits) == 1 else ("all" if splits else None),
                                 "n_docs": sum(ev.values()), "docs_by_split": dict(ev)}
            per_task[t] = rec
        return {"interventions": per_task}

    def note_scored(self, sub, scores, steer: str) -> None:
        """After scoring one task's items: refuse non-finite scores, count docs by split, check that an
        automatically calibrated intervention never scores a calibration doc."""
        if not sub:
            return
        task = sub[0].meta["task"]
        rec = self.records.get(task) or self.records.get("*") or {}
        settings = json.dumps({k: v for k, v in (rec or {}).items() if k in (
            "kind", "strength", "layers", "weights", "heads", "source_layer", "gap", "control", "seed", "artifact")}
                              or {"steer": steer}, default=str)
        check_finite(task, sub, scores, settings)
        ev = self.evaluated.setdefault(task, {})
        cal_ids = set((rec or {}).get("_calibration_clip_ids") or ())
        overlap = []
        for it in sub:
            doc = it.meta.get("doc")
            split = doc.get("split") if isinstance(doc, dict) else None
            ev[str(split or "unknown")] = ev.get(str(split or "unknown"), 0) + 1
            did = doc.get("doc_id") if isinstance(doc, dict) else None
            if cal_ids and did is not None and str(did) in cal_ids:
                overlap.append(str(did))
        if overlap and rec.get("source") == "automatic calibration":
            raise ValueError(f"audio_lalm: task {task!r} scores doc {overlap[0]!r}, which the automatic calibration "
                             "of this run used; evaluate the evaluation split (the default with automatic "
                             "calibration; drop --metadata split=...), or pass calibration=DIR")
        if overlap and task not in self._overlap_warned:
            self._overlap_warned.add(task)
            log.warning("audio_lalm: task %s scores %d doc(s) (e.g. %s) that calibrated the artifact %s; for held-out "
                        "numbers evaluate --metadata '{\"split\": \"evaluation\"}'", task, len(overlap), overlap[0],
                        rec.get("artifact"))
