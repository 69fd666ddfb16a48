"""Deterministic calibration / evaluation splits.

Interventions and probes are fitted on a *calibration* subset and reported on a disjoint *evaluation*
subset (AudioLens' probing/test split: 100 / 400 clips on a 500-clip SAKURA track with the default
``calibration_fraction=0.2``).

The split is label-stratified and depends only on ``(labels, seed, fraction)``:

* the number of calibration items is ``round(fraction * N)``, shared between labels in proportion to
  their counts (largest-remainder rounding, ties broken by label name), so every label keeps its share;
* inside one label, items are shuffled with ``numpy.random.default_rng([seed, crc32(label)])`` and the
  first ones go to calibration. The generator depends on the label string only through crc32 (not on
  Python's salted ``hash``), so the split is identical across processes and ``PYTHONHASHSEED`` values,
  and a label's split does not change when other labels are added or removed.

Selected indices are returned in ascending order (the dataset's own order).

Task metadata keys (``--metadata '{...}'``) read by the loaders:
``split`` ("evaluation" (default) | "calibration" | "all"; "train" only with a split column),
``split_seed`` (int, default 0), ``calibration_fraction`` (float in [0, 1], default 0.2).

A dataset may instead carry its own ``split`` column (values train / calibration / evaluation, e.g. the
project's synthetic demo set); then that column decides and rows marked ``train`` are never part of the
calibration or evaluation selections ("all" returns every row).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("evaluation", "calibration", "all")
COLUMN_SPLITS = ("train", "calibration", "evaluation")
DEFAULT_SPLIT = "evaluation"
DEFAULT_SEED = 0
DEFAULT_CALIBRATION_FRACTION = 0.2


def stratified_split(labels: Sequence, seed: int = DEFAULT_SEED,
                     fraction: float = DEFAULT_CALIBRATION_FRACTION) -> tuple[list[int], list[int]]:
    """Split item indices into ``(calibration_idx, evaluation_idx)``, stratified by ``labels``.

    Both lists are sorted, disjoint, and together cover ``range(len(labels))``.
    """
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"calibration_fraction must be in [0, 1], got {fraction}")
    labels = [str(x) for x in labels]
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    names = sorted(groups)

    # Largest-remainder allocation of round(fraction * N) calibration slots over labels.
    quotas = {lab: fraction * len(groups[lab]) for lab in names}
    counts = {lab: int(np.floor(q)) for lab, q in quotas.items()}
    missing = int(round(fraction * len(labels))) - sum(counts.values())
    by_remainder = sorted(names, key=lambda lab: (-(quotas[lab] - counts[lab]), lab))
    for lab in by_remainder[:max(missing, 0)]:
        counts[lab] += 1

    calib: list[int] = []
    for lab in names:
        idx = groups[lab]
        rng = np.random.default_rng([int(seed), zlib.crc32(lab.encode("utf-8"))])
        order = rng.permutation(len(idx))
        calib.extend(idx[j] for j in order[:counts[lab]])
    calib_set = set(calib)
    return sorted(calib), [i for i in range(len(labels)) if i not in calib_set]


def select_split(labels: Sequence, split: str = DEFAULT_SPLIT, seed: int = DEFAULT_SEED,
                 fraction: float = DEFAULT_CALIBRATION_FRACTION,
                 split_column: Sequence | None = None, where: str = "dataset") -> list[int]:
    """Indices (ascending) of the rows in ``split``.

    ``split_column``: per-row split names stored with the data (train/calibration/evaluation); when
    given it replaces the stratified split. ``where`` names the data in error messages.
    """
    split = str(split).strip().lower()
    if split_column is None:
        if split not in SPLITS:
            raise ValueError(f"{where}: unknown split {split!r}; expected one of {list(SPLITS)}")
        if split == "all":
            return list(range(len(labels)))
        calib, evaluation = stratified_split(labels, seed, fraction)
        return calib if split == "calibration" else evaluation

    values = [str(v).strip().lower() for v in split_column]
    bad = sorted(set(values) - set(COLUMN_SPLITS))
    if bad:
        raise ValueError(f"{where}: column 'split' has unknown values {bad}; expected {list(COLUMN_SPLITS)}")
    if split not in SPLITS + ("train",):
        raise ValueError(f"{where}: unknown split {split!r}; expected one of {list(SPLITS) + ['train']}")
    if split == "all":
        return list(range(len(values)))
    return [i for i, v in enumerate(values) if v == split]


def split_options(meta: dict) -> dict:
    """The split keys of a task's metadata with their defaults (``split``, ``split_seed``, ``calibration_fraction``)."""
    return {
        "split": str(meta.get("split") or DEFAULT_SPLIT),
        "seed": int(meta.get("split_seed", DEFAULT_SEED)),
        "fraction": float(meta.get("calibration_fraction", DEFAULT_CALIBRATION_FRACTION)),
    }
