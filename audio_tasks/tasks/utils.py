"""Functions referenced by the task YAMLs (``!function utils.<name>``).

The YAML folders hold a one-line ``utils.py`` that re-exports this module, because lm-eval resolves
``utils.<name>`` next to the YAML file.

Scoring (``output_type: multiple_choice``; ``results`` holds one ``(ll, is_greedy)`` per choice, where ``ll``
is the summed log-probability of the continuation, possibly an ``audio_tasks.scoring.LogLik`` with
``first_token_logprob``):

* ``acc``: argmax of the summed log-probs is the gold choice;
* ``acc_first_token``: argmax of ``getattr(ll, "first_token_logprob", float(ll))`` is gold (AudioLens'
  criterion: the label with the highest next-token probability at the last prompt position);
* ``acc_label_<label>`` (SAKURA): ``acc`` on the documents of that label only (``None`` elsewhere, skipped by
  :func:`mean_skip_none`);
* ``balanced_acc`` (SAKURA): mean over gold labels of the per-label recall; each document contributes
  ``(gold label, predicted label)`` (for lettered tasks the predicted label is the gold label when the chosen
  option is the right one, else the chosen option's text);
* ``acc_difficulty_<easy|medium|hard>`` (MMAU): ``acc`` on the items of that difficulty only.

MMAU counts a prediction correct when the chosen option's *text* is the answer text (``doc["golds"]``, every
index with that text; MMAU's own evaluation matches by text), for ``acc``, ``acc_first_token`` and the
difficulty metrics. Group-level breakdowns by domain / difficulty / category / sub-category:
``python -m analysis mmau RUN_DIR`` (from the ``--log_samples`` files).

A non-finite score never becomes an accuracy: :class:`NonFiniteScoreError` (the ``audio_lalm`` model already
refuses it with the task, doc and intervention named).
"""

from __future__ import annotations

import math

import numpy as np

from audio_tasks.data.mmau import DIFFICULTIES, load_mmau  # noqa: F401  (used by the YAMLs)
from audio_tasks.data.sakura import load_sakura  # noqa: F401  (used by the YAMLs)


def sakura_dataset(sakura_track: str, sakura_prompt: str = "p3", **metadata):
    """``custom_dataset`` of the SAKURA YAMLs (``dataset_kwargs``: sakura_track, sakura_prompt)."""
    from audio_tasks.data.registry import stamp_metadata

    return stamp_metadata(load_sakura(sakura_track, sakura_prompt, **metadata), metadata)


def mmau_dataset(mmau_task: str | None = None, **metadata):
    """``custom_dataset`` of the MMAU YAMLs (``dataset_kwargs``: mmau_task)."""
    from audio_tasks.data.registry import stamp_metadata

    return stamp_metadata(load_mmau(mmau_task, **metadata), metadata)


def doc_to_audio(doc: dict) -> list:
    return [doc["audio"]]


class NonFiniteScoreError(ValueError):
    """A choice's score is NaN or infinite: no accuracy may be computed from it."""


def doc_to_target(doc: dict) -> str:
    """The gold answer as scored: the gold choice's text (the label for P1/P2, the letter for lettered options),
    so ``--log_samples`` records ``target`` as ``"female"`` / ``"b"`` rather than the index ``0``.  Metrics use
    ``doc["gold"]`` (``process_results``), never this string."""
    return str(doc["choices"][int(doc["gold"])])


def _predictions(results, doc: dict | None = None) -> tuple[int, int]:
    lls = [float(ll) for ll, _ in results]
    first = [float(getattr(ll, "first_token_logprob", float(ll))) for ll, _ in results]
    if not all(math.isfinite(x) for x in lls + first):
        # The model raises first (naming task, doc and intervention); this guards other models.
        did = doc.get("doc_id") if isinstance(doc, dict) else None
        raise NonFiniteScoreError(f"non-finite score for doc {did!r}: log-probs {lls}, first-token log-probs "
                                  f"{first}; refusing to compute an accuracy from NaN/inf")
    return int(np.argmax(lls)), int(np.argmax(first))


def correct_set(doc: dict) -> set[int]:
    """Indices that count as correct: ``golds`` when the doc lists several (MMAU: repeated answer text), else gold."""
    golds = doc.get("golds") if isinstance(doc, dict) else None
    return {int(g) for g in golds} if golds else {int(doc["gold"])}


def process_results(doc: dict, results) -> dict:
    """SAKURA metrics for one document (see module docstring)."""
    pred, pred_first = _predictions(results, doc)
    gold = int(doc["gold"])
    acc = float(pred == gold)
    out = {"acc": acc, "acc_first_token": float(pred_first == gold)}
    for label in doc["label_set"]:
        out[f"acc_label_{label}"] = acc if doc["label"] == label else None
    predicted = doc["label"] if pred == gold else doc["options"][pred]
    out["balanced_acc"] = (doc["label"], predicted)
    return out


def process_results_mmau(doc: dict, results) -> dict:
    """MMAU metrics for one document (see module docstring)."""
    pred, pred_first = _predictions(results, doc)
    golds = correct_set(doc)
    acc = float(pred in golds)
    out = {"acc": acc, "acc_first_token": float(pred_first in golds)}
    for level in DIFFICULTIES:
        out[f"acc_difficulty_{level}"] = acc if doc["difficulty"] == level else None
    return out


def mean_skip_none(items) -> float:
    """Mean of the non-``None`` items (NaN when there are none)."""
    values = [float(x) for x in items if x is not None]
    return sum(values) / len(values) if values else math.nan


def balanced_accuracy(items) -> float:
    """Mean over gold labels of recall = fraction of that label's documents predicted as that label
    (``sklearn.metrics.balanced_accuracy_score``; predicted labels that are no gold label count as misses)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    pairs = [(str(gold), str(pred)) for gold, pred in items]
    if not pairs:
        return math.nan
    golds, preds = zip(*pairs)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": such classes have no recall
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(golds, preds))
