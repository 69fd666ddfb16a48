"""Batches of scoring items: length-sorted batches with an out-of-memory back-off, and shared audio prefixes.

Ordering and restoring the request order use lm-eval's own :class:`lm_eval.models.utils.Collator` (the
``hf`` model's reorderer): items are scored longest first (ties in their given order) and the scores come
back in the order of the items.  The batch size starts at the model's and halves on
``torch.OutOfMemoryError`` (the failed batch is retried; the prefix KV cache is dropped to free memory).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tqdm import tqdm

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["BatchSize", "item_length", "score_in_batches", "shared_prefix_groups", "score_shared", "score_tasks"]


@dataclass
class BatchSize:
    """The batch size of a run; ``auto``: an out-of-memory back-off lowers it for the rest of the run."""
    value: int
    auto: bool = False


def item_length(item: Any) -> int:
    """Prompt length in tokens (audio placeholders included): the sort key, longest first."""
    return int(item.tok.input_ids.shape[0])


def score_in_batches(engine: Any, items: Sequence[Any], intervention: Any, batch: BatchSize, *,
                     share_prefix: bool = False, pbar: Any = None, desc: str = "audio_lalm",
                     disable: bool = False) -> list[Any]:
    """``interventions.scoring.score_items`` over ``items`` in batches of ``batch.value``, longest first;
    scores in the order of ``items``.  Out of memory: the batch is retried at half the size (an error at
    size 1); with ``batch.auto`` the lowered size is kept for later calls."""
    import torch
    from lm_eval.models.utils import Collator

    from interventions import scoring

    collator = Collator(list(items), sort_fn=lambda it: -item_length(it))
    ordered = next(collator.get_batched(n=0), [])  # n=0: one chunk, the whole sorted list
    bs, pos, scores = batch.value, 0, []
    own = pbar is None
    if own:
        pbar = tqdm(total=len(items), desc=desc, disable=disable)
    while pos < len(ordered):
        chunk = ordered[pos: pos + bs]
        try:
            out = scoring.score_items(engine, chunk, intervention, share_prefix=share_prefix)
        except torch.OutOfMemoryError:
            if bs == 1:
                raise
            engine.drop_prefix_cache()  # recomputed on demand; frees device memory now
            torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            log.warning("audio_lalm: out of memory, batch size lowered to %d", bs)
            continue
        scores.extend(out)
        pos += len(chunk)
        pbar.update(len(chunk))
    if own:
        pbar.close()
    if batch.auto:
        batch.value = bs
    return collator.get_original(scores)


def shared_prefix_groups(engine: Any, items: Sequence[Any], mode: str) -> list[list[int]] | None:
    """Item indices grouped by audio prefix (same clip, same text before it) when sharing pays off:
    ``mode`` ``true``, or ``auto`` and some prefix occurs more than once.  Groups longest first.  None:
    score as usual."""
    if mode == "false":
        return None
    groups: OrderedDict[Any, list[int]] = OrderedDict()
    for i, it in enumerate(items):
        key = engine.prefix_key(it.tok)
        groups.setdefault(key if key is not None else ("own", i), []).append(i)
    if mode == "auto" and all(len(g) == 1 for g in groups.values()):
        return None
    return sorted(groups.values(), key=lambda g: -max(item_length(items[i]) for i in g))


def score_shared(engine: Any, items: Sequence[Any], groups: list[list[int]], by_task: dict[str, list[int]],
                 interventions: dict[str, Any], batch: BatchSize, emit: Callable[[list, list], None], *,
                 disable: bool = False) -> None:
    """Shared audio prefixes: walk the clip groups in chunks of one batch; within a chunk every task (prompt
    format, intervention) is scored against the prefix KV computed once per clip; ``emit(items, scores)``
    per task and chunk."""
    pbar = tqdm(total=len(items), desc="audio_lalm (shared audio prefixes)", disable=disable)
    pos = 0
    while pos < len(groups):
        chunk = groups[pos: pos + batch.value]
        engine.reserve_prefix_cache(2 * len(chunk))
        members = {i for g in chunk for i in g}
        for task, idxs in by_task.items():
            sub = [items[i] for i in idxs if i in members]
            if sub:
                emit(sub, score_in_batches(engine, sub, interventions[task], batch, share_prefix=True, pbar=pbar))
        pos += len(chunk)
    pbar.close()


def score_tasks(engine: Any, items: Sequence[Any], share_prefix: str, batch: BatchSize,
                intervention_for: Callable[[str, Any], Any], emit: Callable[[list, list], None], *,
                score: Callable[..., list[Any]] | None = None, disable: bool = False) -> list[Any]:
    """Scores of ``items`` (all prepared), in their order.  ``share_prefix`` ``auto``: each task on its own (a
    task's scores must not depend on which other tasks ran), prefixes repeated within a task shared; ``true``:
    shared across tasks (:func:`score_shared`); ``false``: none.  ``intervention_for(task, doc)`` is asked
    when a task is first scored; ``emit(items, scores)`` per scored part; ``score``: the per-batch walk
    (default :func:`score_in_batches`)."""
    def walk(sub, iv, desc):
        if score is not None:
            return score(sub, iv, desc=desc)
        return score_in_batches(engine, sub, iv, batch, desc=desc, disable=disable)

    done: dict[int, Any] = {}

    def keep(sub, scores) -> None:
        emit(sub, scores)
        done.update({id(it): s for it, s in zip(sub, scores)})

    by_task: OrderedDict[str, list[int]] = OrderedDict()
    for i, it in enumerate(items):
        by_task.setdefault(it.meta["task"], []).append(i)
    parts = [(by_task, list(items))] if share_prefix != "auto" else [
        ({task: list(range(len(idxs)))}, [items[i] for i in idxs]) for task, idxs in by_task.items()]
    for tasks, sub in parts:
        ivs = {task: intervention_for(task, sub[idxs[0]].meta["doc"]) for task, idxs in tasks.items()}
        groups = shared_prefix_groups(engine, sub, share_prefix)
        if groups is not None:
            score_shared(engine, sub, groups, tasks, ivs, batch, keep, disable=disable)
            continue
        for task, idxs in tasks.items():
            part = [sub[i] for i in idxs]
            keep(part, walk(part, ivs[task], f"audio_lalm {task}"))
    return [done[id(it)] for it in items]
