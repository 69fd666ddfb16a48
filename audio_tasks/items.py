"""Turn lm-eval tasks into scored items (prompt + audio + choices + gold), through lm-eval itself.

Calibration and the analyses use exactly the requests lm-eval builds for a task (same prompt,
same continuations, same audio), so what is analysed is what is evaluated.
"""

from __future__ import annotations

from typing import Any, Iterable

from lm_eval.api.instance import Instance

__all__ = ["load_tasks", "task_requests", "task_items", "flatten_tasks"]


def flatten_tasks(task_dict: dict) -> dict[str, Any]:
    """{name: Task} from a (possibly nested, group-keyed) lm-eval task dict."""
    from lm_eval.api.task import Task

    out: dict[str, Any] = {}
    for k, v in task_dict.items():
        if isinstance(v, Task):
            out[getattr(v, "task_name", None) or str(k)] = v
        elif isinstance(v, dict):
            out.update(flatten_tasks(v))
    return out


def load_tasks(task_names: Iterable[str], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """{name: Task}.  Indexes only this package's task folder when it holds every requested task
    (lm-eval's full index takes 10-25 s to build), else lm-eval's full index."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from audio_tasks.tasks import TASKS_DIR

    names = [t for t in task_names if t]
    md = dict(metadata or {})
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=md)
    if not all(t in tm.all_tasks for t in names):
        tm = TaskManager(metadata=md)
    unknown = [t for t in names if t not in tm.all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; see `lm_eval ls tasks` (this package adds sakura_*, "
                         "mmau_*, demo_*)")
    return flatten_tasks(get_task_dict(names, tm))


def task_requests(task: Any, limit: int | None = None, apply_chat_template: bool = False,
                  chat_template: Any = None) -> list[Instance]:
    """Build and return the request instances of an lm-eval ``task``."""
    task.build_all_requests(limit=limit, rank=0, world_size=1, apply_chat_template=apply_chat_template,
                            chat_template=chat_template)
    return list(task.instances)


def task_items(engine: Any, task_names: Iterable[str], *, split: str | None = None,
               metadata: dict[str, Any] | None = None, limit: int | None = None) -> list[Any]:
    """MCItems (see interventions.scoring) for the docs of the given tasks.

    ``engine``: an :class:`interventions.engine.Engine` (``interventions.load_engine``), or an object with an
    ``engine`` attribute (``AudioLALM``, whose ``item_options()`` apply); items come from
    ``audio_tasks.requests.build_items``.

    ``item.meta`` holds task, doc_id, doc, gold (index), choices (strings) and the rendered prompt.
    """
    from audio_tasks.requests import build_items

    lm = engine if hasattr(engine, "engine") else None  # AudioLALM: its first-token settings apply
    opts = lm.item_options() if lm is not None and hasattr(lm, "item_options") else {}
    engine = getattr(engine, "engine", engine)
    md = dict(metadata or {})
    if split:
        md["split"] = split
    tasks = load_tasks(task_names, md)
    order = {t: i for i, t in enumerate(task_names)}
    items = []
    for name in sorted(tasks, key=lambda n: (order.get(n, len(order)), n)):
        task = tasks[name]
        # analyses score first tokens: choices sharing one are refused (audio_tasks.labels)
        its = build_items(engine, task_requests(task, limit=limit), for_analysis=True, **opts)
        for it in its:
            doc = it.meta["doc"]
            choices = task.doc_to_choice(doc)
            gold = doc["gold"] if isinstance(doc, dict) and "gold" in doc else task.doc_to_target(doc)
            if not isinstance(gold, int):
                gold = choices.index(gold) if gold in choices else int(gold)
            is_dict = isinstance(doc, dict)
            golds = doc.get("golds") if is_dict else None  # MMAU: every option with the answer text
            it.meta.update({"task": name, "gold": int(gold), "golds": [int(g) for g in golds] if golds else [int(gold)],
                            "choices": list(choices),
                            "label": doc.get("label", choices[gold]) if is_dict else choices[gold],
                            "clip_id": doc.get("doc_id", it.meta["doc_id"]) if is_dict else it.meta["doc_id"]})
        items.extend(its)
    return items
