"""First-token checks used before any forward pass (scoring and the first-token analyses).

First tokens matter: ``acc_first_token`` and every analysis that reads first tokens (lens, heads,
calibration, tracing) compare the choices' first tokens at the last prompt position.  When two choices of
a doc share their first token those comparisons cannot tell them apart, so ``audio_lalm`` refuses such a
task before any forward pass, naming the labels and the shared token.  Model argument
``first_token_collisions``: ``auto`` (default) refuses tasks that report ``acc_first_token`` (this
package's sakura_* / mmau_* / demo_* tasks) and every first-token analysis, and lets other lm-eval tasks
(which only use the full-continuation likelihood) through; ``refuse`` refuses any task; ``allow`` is the
documented fallback: scores are computed anyway and tied first tokens make ``acc_first_token`` pick the
first of the tied choices.

``first_token=audiolens`` scores first tokens as the AudioLens release code does: the first sub-token of
the label tokenized on its own, without a leading space ("fear" -> "f", "rooster" -> "ro").  The default
``first_token=in_context`` is the token the model actually has to produce after the prompt (" fear"),
which is what ``acc`` and the full-continuation likelihood score; use ``audiolens`` only to reproduce
the AudioLens figures.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Sequence

__all__ = ["FIRST_TOKEN_MODES", "COLLISION_POLICIES", "FirstTokenCollision", "collisions", "check_first_tokens",
           "audiolens_first_id", "first_token_tasks", "refuses", "token_piece"]

FIRST_TOKEN_MODES = ("in_context", "audiolens")
COLLISION_POLICIES = ("auto", "refuse", "allow")


@functools.lru_cache(maxsize=1)
def first_token_tasks() -> frozenset[str]:
    """Names of this package's tasks: all of them report ``acc_first_token`` (audio_tasks/tasks/utils.py).
    Read from the task YAML files once (``functools.lru_cache``)."""
    import re as _re

    from audio_tasks.tasks import TASKS_DIR

    names = set()
    for f in TASKS_DIR.rglob("*.yaml"):
        m = _re.search(r"^task:\s*([\w.-]+)\s*$", f.read_text(), _re.M)
        if m:
            names.add(m.group(1))
    return frozenset(names)


def refuses(policy: str, task_name: str | None, analysis: bool = False) -> bool:
    """Whether first-token collisions refuse this task: ``refuse`` always, ``allow`` never, ``auto`` (the
    default) for tasks reporting ``acc_first_token`` (this package's tasks) and for every analysis."""
    if policy == "auto":
        return analysis or (task_name in first_token_tasks())
    return policy == "refuse"


class FirstTokenCollision(ValueError):
    """Two choices of a doc share their first token."""


def audiolens_first_id(encode_text, label: str) -> int:
    """First sub-token of ``label`` tokenized alone, without a leading space (AudioLens release code)."""
    ids = encode_text(label.strip())
    if not ids:
        raise ValueError(f"label {label!r} tokenizes to nothing")
    return int(ids[0])


def collisions(labels: Sequence[str], first_ids: Sequence[int]) -> list[tuple[int, list[str]]]:
    """[(token id, [labels sharing it])] over distinct labels with the same first token."""
    by: OrderedDict[int, list[str]] = OrderedDict()
    for lab, t in zip(labels, first_ids):
        if lab not in by.setdefault(int(t), []):
            by[int(t)].append(lab)
    return [(t, labs) for t, labs in by.items() if len(labs) > 1]


def token_piece(tokenizer: Any, tid: int) -> str:
    """The text of token ``tid`` (its id as text when it does not decode)."""
    try:
        return str(tokenizer.decode([int(tid)]))
    except Exception:  # noqa: BLE001
        return str(tid)


def check_first_tokens(labels: Sequence[str], first_ids: Sequence[int], tokenizer: Any, where: str) -> None:
    """Raise :class:`FirstTokenCollision` if two of a doc's choices share their first token."""
    found = collisions(labels, first_ids)
    if not found:
        return
    t, labs = found[0]
    raise FirstTokenCollision(
        f"{where}: choices {labs} share the first token {token_piece(tokenizer, t)!r} (id {t}), so acc_first_token "
        "and the first-token analyses (lens, heads, calibration, tracing) cannot tell them apart; refused "
        "before any forward pass. Check labels with `python -m audio_tasks.labels`; to score anyway pass the "
        "model argument first_token_collisions=allow (valid: " + ", ".join(COLLISION_POLICIES) + ").")
