"""Calibration glue between lm-eval tasks and the intervention engine.

* ``resolve_static``: interventions fixed by the model arguments alone, or by ``calibration=DIR``
  (checked against the model before any forward pass);
* ``auto_calibrate``: the headline command has no ``calibration=``: calibrate on the task's
  calibration split (never on evaluated docs; checked), cache the artifact on disk under a key of
  model, revision, task, split and seed, and say so in the log;
* ``build_intervention``: artifact + arguments -> intervention object (incl. random controls);
* ``TaskInterventions``: per task, the intervention a model applies and its record (the adapter's seam).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from interventions.atomic import cache_root
from interventions.calibrate import calibrate, load_artifact, save_artifact
from interventions.config import SteerConfig
from interventions.steering import Enrich, HeadSteer, LayerGuided, RandomEnrich, layer_weights

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["resolve_static", "auto_calibrate", "TaskInterventions", "build_intervention", "run_calibration",
           "cache_root", "KINDS_NEEDED"]

KINDS_NEEDED = {"enrich": ("enrich",), "layer_guided": ("layer_guided",), "single_layer": ("single_layer",),
                "head": ("head",)}


def random_heads(L: int, H: int, K: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    idx = rng.choice(L * H, size=min(K, L * H), replace=False)
    return sorted((int(i) // H + 1, int(i) % H) for i in idx)


def _need(art: dict[str, Any] | None, section: str, key: str, what: str) -> Any:
    if art is None or section not in art or art[section].get(key) is None:
        where = art.get("_path") if art else None
        raise ValueError(f"{what} is not given and the calibration artifact {where or ''} has no '{section}.{key}'; "
                         f"pass it explicitly or calibrate with steer={section}")
    return art[section][key]


def build_intervention(cfg: SteerConfig, art: dict[str, Any] | None, L: int, H: int):
    """The intervention object for ``cfg``, taking unspecified parts from the artifact."""
    k = cfg.steer
    if k == "none":
        return None
    if k == "enrich":
        lam = cfg.alpha if cfg.alpha is not None else _need(art, "enrich", "lam", "lam/alpha")
        if cfg.control == "random":
            gap = (cfg.gap if cfg.gap_given or art is None or "enrich" not in art
                   else int(art["enrich"].get("gap", cfg.gap)))
            return RandomEnrich(lam=lam, gap=gap, seed=cfg.seed, num_layers=L)
        src = cfg.source_layer if cfg.source_layer is not None else _need(art, "enrich", "source_layer", "source_layer")
        gap = cfg.gap if cfg.source_layer is not None or art is None else int(art["enrich"].get("gap", cfg.gap))
        return Enrich(int(src), float(lam), int(gap))
    if k == "single_layer":
        alpha = cfg.alpha if cfg.alpha is not None else _need(art, "single_layer", "alpha", "alpha")
        if cfg.control == "random":
            layer = int(np.random.default_rng(cfg.seed).integers(1, L + 1))
        else:
            layer = cfg.layers[0] if cfg.layers else _need(art, "single_layer", "layer", "layers")
        return LayerGuided({int(layer): 1.0}, float(alpha), name="single_layer")
    # layer_guided / head
    if cfg.heads is not None:
        heads = list(cfg.heads)
    elif cfg.control == "random":
        heads = random_heads(L, H, cfg.K, cfg.seed)
    elif k == "layer_guided" and cfg.layers is not None:
        heads = []
    else:
        heads = [tuple(h) for h in _need(art, "heads", "specialists", "heads")]
        if cfg.k_given and art is not None:
            heads = top_k_heads(art, cfg.K)
    alpha = cfg.alpha if cfg.alpha is not None else _need(art, k, "alpha", "alpha")
    if k == "layer_guided":
        if heads:
            weights = layer_weights(heads)
        else:
            layers = cfg.layers
            assert layers is not None, "no heads: layer_guided needs layers="
            weights = {int(l): 1.0 / len(layers) for l in layers}
        return LayerGuided(weights, float(alpha), heads=heads)
    return HeadSteer(heads, float(alpha))


def top_k_heads(art: dict[str, Any], K: int) -> list[tuple[int, int]]:
    """The top-``K`` heads of the artifact's ranking (``heads.ranking``: every head by |r|, kept in full;
    older artifacts: the ``specialists`` list, itself in ranking order). An error when it has fewer."""
    sec = art.get("heads") or {}
    ranking = sec.get("ranking") or sec.get("specialists") or []
    if K > len(ranking):
        where = art.get("_path") or "the calibration artifact"
        key = "heads.ranking" if sec.get("ranking") else "heads.specialists"
        raise ValueError(f"K={K} but calibration artifact {where} ranks only {len(ranking)} heads ('{key}'); "
                         f"use K<={len(ranking)} or recalibrate with K={K}")
    return [(int(h[0]), int(h[1])) for h in ranking[:K]]


def _dims(lm) -> tuple[int, int]:
    return lm.spec.num_layers(lm.model), lm.spec.num_heads(lm.model)


def resolve_static(lm) -> tuple[Any, dict[str, Any]] | None:
    """``(intervention, record)`` fixed by arguments or by ``calibration=DIR``; None when auto-calibration is
    needed."""
    cfg: SteerConfig = lm.steer_cfg
    L, H = _dims(lm)
    from audio_tasks.record import intervention_record

    if cfg.calibration:
        art = load_artifact(cfg.calibration, model_id=lm.pretrained, num_layers=L, num_heads=H, fingerprint=lm.identity)
        iv = build_intervention(cfg, art, L, H)
        rec = intervention_record(cfg, iv, art, source="calibration artifact")
        rec["_calibration_clip_ids"] = [str(c) for c in (art.get("meta") or {}).get("clip_ids") or []]
        return iv, rec
    if cfg.explicit:
        iv = build_intervention(cfg, None, L, H)
        return iv, intervention_record(cfg, iv, None, source="arguments")
    return None


class TaskInterventions:
    """Per task, the intervention ``lm`` applies and its record (what was applied, for the results JSON).

    Fixed by the arguments or ``calibration=DIR``: resolved (and checked against the model) now, the same
    for every task; else calibrated automatically on each task's calibration split on first use, with the
    task metadata stamped on its docs (:func:`auto_calibrate`).  ``records``: the dict the run's
    :class:`audio_tasks.record.RunRecord` reads."""

    def __init__(self, lm, records: dict[str, dict[str, Any]]) -> None:
        self.lm = lm
        self.records = records
        self.objects: dict[str, Any] = {}
        static = resolve_static(lm) if lm.steer_cfg.steer != "none" else None
        if static is not None:
            self.objects["*"], self.records["*"] = static

    @property
    def automatic(self) -> bool:
        """Whether each task is calibrated automatically (its default split is then the evaluation split)."""
        return self.lm.steer_cfg.steer != "none" and "*" not in self.objects

    def for_task(self, task_name: str | None, doc: Any = None):
        """The task's intervention (None without ``steer``); auto-calibrated on first use."""
        from audio_tasks.record import log_record

        if self.lm.steer_cfg.steer == "none":
            return None
        key: Any = task_name
        if "*" in self.objects:
            if key not in self.records:
                self.records[key] = self.records.get("*", {})
                log_record(str(task_name), self.records[key])
            return self.objects["*"]
        if key not in self.objects:
            from audio_tasks.data.registry import doc_metadata

            self.objects[key], self.records[key] = auto_calibrate(self.lm, str(task_name), doc_metadata(doc))
            log_record(str(task_name), self.records.get(key, {}))
        return self.objects[key]


def _cache_key(lm, task: str, metadata: dict[str, Any], kinds) -> str:
    cfg: SteerConfig = lm.steer_cfg
    key = {"model": lm.pretrained, "revision": lm.revision, "task": task, "split": "calibration",
           "split_seed": metadata.get("split_seed", 0), "calibration_fraction": metadata.get("calibration_fraction"),
           "data_root": metadata.get("data_root"), "K": cfg.K, "gap": cfg.gap, "alphas": cfg.alphas,
           "kinds": sorted(kinds), "dtype": str(lm.engine.dtype), "weights": lm.identity["weights"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def calibration_items(lm, task: str, metadata: dict[str, Any], limit: int | None = None):
    """Items of the task's calibration split, checked disjoint from its evaluation split."""
    from audio_tasks.items import load_tasks, task_items

    cal = task_items(lm, [task], split="calibration", metadata=metadata, limit=limit)
    ev = load_tasks([task], {**metadata, "split": "evaluation"})
    eval_ids = set()
    for t in ev.values():
        for i, d in enumerate(t.eval_docs):
            eval_ids.add(str(d.get("doc_id", i)) if isinstance(d, dict) else str(i))
    cal_ids = {str(it.meta.get("clip_id")) for it in cal}
    if not cal or cal_ids & eval_ids or len(cal_ids) == 0:
        raise ValueError(f"task {task!r} has no calibration split disjoint from its evaluation split (tasks of this "
                         "package take --metadata split=calibration|evaluation); calibrate elsewhere and pass "
                         "calibration=DIR, or give the intervention's parameters explicitly")
    return cal


def run_calibration(lm, tasks: list[str], out: str | Path | None, *, metadata: dict[str, Any] | None = None,
                    kinds=("enrich", "layer_guided", "single_layer", "head"), limit: int | None = None,
                    batch_size: int = 8, progress: bool = True):
    """Calibrate on the calibration split of ``tasks`` and write the artifact to ``out``."""
    md = dict(metadata or {})
    items = []
    for t in tasks:
        items.extend(calibration_items(lm, t, md, limit))
    cfg: SteerConfig = lm.steer_cfg
    result, tensors = calibrate(lm.engine, items, kinds=kinds, K=cfg.K, gap=cfg.gap, alphas=cfg.alphas,
                                batch_size=batch_size, progress=progress)
    import audio_tasks

    meta = {"model_id": lm.pretrained, "revision": lm.revision, "tasks": list(tasks), "split": "calibration",
            "split_seed": md.get("split_seed", 0), "seed": cfg.seed, "num_layers": _dims(lm)[0],
            "num_heads": _dims(lm)[1], "clip_ids": [str(it.meta.get("clip_id")) for it in items],
            "package_version": audio_tasks.__version__, "dtype": str(lm.engine.dtype),
            "fingerprint": lm.identity}
    if out is not None:
        save_artifact(out, meta, result, tensors)
    return {"meta": meta, **result}, tensors


def auto_calibrate(lm, task: str, metadata: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """``(intervention, record)`` calibrated automatically on ``task``'s calibration split (cached on disk).

    ``metadata``: the task's ``--metadata`` (``audio_tasks.data.registry.doc_metadata`` of its docs)."""
    from audio_tasks.data.registry import calibration_metadata

    cfg: SteerConfig = lm.steer_cfg
    md = calibration_metadata(dict(metadata or {}))
    kinds = KINDS_NEEDED[cfg.steer]
    key = _cache_key(lm, task, md, kinds)
    d = cache_root() / "calibration" / key
    L, H = _dims(lm)
    if (d / "calibration.json").exists():
        art = load_artifact(d, model_id=lm.pretrained, num_layers=L, num_heads=H, fingerprint=lm.identity)
        log.warning("audio_lalm: steer=%s on task %s uses the cached calibration artifact %s", cfg.steer, task, d)
    else:
        log.warning("audio_lalm: steer=%s without calibration=: calibrating on the calibration split of %s "
                    "(never on evaluated docs); artifact cached at %s", cfg.steer, task, d)
        run_calibration(lm, [task], d, metadata=md, kinds=kinds, batch_size=max(1, lm.batch_size_per_gpu))
        art = load_artifact(d, model_id=lm.pretrained, num_layers=L, num_heads=H, fingerprint=lm.identity)
    iv = build_intervention(cfg, art, L, H)
    from audio_tasks.record import intervention_record

    rec = intervention_record(cfg, iv, art, source="automatic calibration", cache_key=key)
    rec["_calibration_clip_ids"] = [str(c) for c in (art.get("meta") or {}).get("clip_ids") or []]
    return iv, rec
