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

Selected indices are returned in ascending order (the dataset's own order); the loaders then put them in
the label-balanced order of :func:`balanced_order`, so that ``--limit N`` covers every label.

Task metadata keys (``--metadata '{...}'``) read by the loaders:
``split`` ("all" | "calibration" | "evaluation"; "train" only with a split column),
``split_seed`` (int, default 0), ``calibration_fraction`` (float in [0, 1], default 0.2).

Default split (:func:`default_split`): standard task names score the **full** set ("all": the 500 clips of a
SAKURA track, the 1,000 MMAU test-mini items), so unsteered numbers compare with published ones. Two
exceptions: a dataset with its own ``split`` column (the synthetic demo set, which has a train split)
defaults to "evaluation"; and when the ``audio_lalm`` model of the run calibrates an intervention
automatically on the task's own data (``steer=...`` without ``calibration=`` or explicit parameters, read
from the model arguments that lm-eval merges into the task metadata) the default is "evaluation", because
calibration uses the "calibration" split (see :func:`audio_tasks.data.registry.auto_calibration_pending`).

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
DEFAULT_SPLIT = "evaluation"  # select_split's default argument; the loaders' default is default_split()
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


def default_split(has_split_column: bool = False, auto_calibration: bool = False) -> str:
    """The split a loader uses when the metadata names none (module docstring); ``auto_calibration``:
    :func:`audio_tasks.data.registry.auto_calibration_pending` of the task metadata."""
    if has_split_column or auto_calibration:
        return "evaluation"
    return "all"


def split_membership(labels: Sequence, seed: int = DEFAULT_SEED, fraction: float = DEFAULT_CALIBRATION_FRACTION,
                     split_column: Sequence | None = None) -> list[str]:
    """Per row, the held-out split it belongs to ("calibration" / "evaluation"; "train" only from a column),
    whatever split was selected; loaders store it in each document's ``split`` field."""
    if split_column is not None:
        return [str(v).strip().lower() for v in split_column]
    calib = set(stratified_split(labels, seed, fraction)[0])
    return ["calibration" if i in calib else "evaluation" for i in range(len(labels))]


def balanced_order(keys: Sequence, seed: int = DEFAULT_SEED) -> list[int]:
    """Positions ``0..len(keys)-1`` in a deterministic, label-balanced order (a seeded interleave).

    ``keys[i]`` is a label or a tuple of levels (e.g. ``(sub_category, difficulty)``). Items are grouped by
    the first level; groups are visited round-robin in sorted order of their names, so the first N items
    cover the groups as evenly as possible (counts differ by at most one until a group runs out). Inside
    a group the same is done with the next level; at the last level items are shuffled with
    ``numpy.random.default_rng([seed, crc32(path of level names)])``. Depends only on (keys, seed).
    """
    rows = [tuple(str(x) for x in k) if isinstance(k, (tuple, list)) else (str(k),) for k in keys]

    def order(idx: list[int], level: int, path: str) -> list[int]:
        if not idx:
            return []
        if level >= max(len(rows[i]) for i in idx):
            rng = np.random.default_rng([int(seed), zlib.crc32(path.encode("utf-8"))])
            return [idx[j] for j in rng.permutation(len(idx))]
        groups: dict[str, list[int]] = {}
        for i in idx:
            groups.setdefault(rows[i][level] if level < len(rows[i]) else "", []).append(i)
        seqs = [order(groups[g], level + 1, f"{path}\x1f{g}") for g in sorted(groups)]
        out: list[int] = []
        for k in range(max(len(q) for q in seqs)):
            out.extend(q[k] for q in seqs if k < len(q))
        return out

    return order(list(range(len(rows))), 0, "")


def split_options(meta: dict, has_split_column: bool = False) -> dict:
    """The split keys of a task's metadata with their defaults (``split``, ``split_seed``, ``calibration_fraction``)."""
    from audio_tasks.data.registry import auto_calibration_pending

    return {
        "split": str(meta.get("split") or default_split(has_split_column, auto_calibration_pending(meta))),
        "seed": int(meta.get("split_seed", DEFAULT_SEED)),
        "fraction": float(meta.get("calibration_fraction", DEFAULT_CALIBRATION_FRACTION)),
    }
