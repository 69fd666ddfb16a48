"""What the commands of ``python -m analysis`` share: common options, the model-command preamble, item fields.

:func:`start_run` is the one preamble of the resumable model commands (lens, trace, heads): output folder,
model (:func:`load_lm`), items per split (:func:`load_items`), settings pinned in ``<out>/<analysis>_run.json``
and the record store ``<out>/<analysis>_records.jsonl``. :func:`build_tree` builds an argument parser from
command modules' ``register`` functions.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeAlias

from analysis.records import RecordStore, write_json
from interventions.atomic import json_safe

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what ``register`` functions get
Register: TypeAlias = Callable[[Subparsers], argparse.ArgumentParser]  # a command module's ``register``

__all__ = ["ModelRun", "Register", "Subparsers", "add_common_arguments", "announce", "build_tree", "by_task",
           "chunks", "item_fields", "item_golds", "item_key", "load_items", "load_lm", "package_version",
           "parse_metadata", "pin_settings", "progress", "run_meta", "run_parsed", "start_run", "tasks_of"]


# ---- the parser tree ------------------------------------------------------------------------------------------


def build_tree(registers: Sequence[Register], *, prog: str = "python -m analysis", description: str | None = None,
               epilog: str | None = None) -> argparse.ArgumentParser:
    """One parser with a subcommand per ``register`` function (each adds its parser and sets ``func``)."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="command")
    for register in registers:
        register(sub)
    return p


def run_parsed(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Parse ``argv`` (command first) and run the command's entry point; no command: help and exit code 2."""
    args = parser.parse_args(list(argv))
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


def add_common_arguments(p: argparse.ArgumentParser, split_default: str | None = "all", split: bool = True) -> None:
    """The options every model command takes (model, tasks, metadata, split, limit, batch size, out, ...)."""
    p.add_argument("--model_args", default="",
                   help="comma-separated key=value model arguments, as lm-eval's (pretrained=...,dtype=...); "
                        "default: none, i.e. the embedded reference model (audio-lalm-reference), as "
                        "`lm_eval --model audio_lalm` without --model_args")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names (e.g. sakura_gender)")
    p.add_argument("--metadata", nargs="+", default=None,
                   help='task metadata as lm-eval takes it: a JSON object (\'{"data_root": "..."}\') or key=value')
    if split:
        p.add_argument("--split", default=split_default, choices=["calibration", "evaluation", "all"],
                       help="data split of the tasks (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="at most N documents per task (and split)")
    p.add_argument("--batch_size", type=int, default=8, help="items per forward pass (default %(default)s)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed recorded with the outputs (default %(default)s)")
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


# ---- small helpers ----------------------------------------------------------------------------------------


def package_version() -> str:
    """The installed distribution's version (``audio_tasks.__version__``)."""
    import audio_tasks

    return audio_tasks.__version__


def parse_metadata(values: Sequence[str] | str | None) -> dict[str, Any]:
    """``--metadata`` as lm-eval takes it: a JSON object, or ``key=value`` items (values via literal_eval)."""
    if not values:
        return {}
    if isinstance(values, str):
        values = [values]
    out: dict[str, Any] = {}
    for v in values:
        v = v.strip()
        if not v:
            continue
        if v.startswith("{"):
            try:
                d = json.loads(v)
            except json.JSONDecodeError as e:
                raise SystemExit(f"--metadata: invalid JSON {v!r}: {e}") from None
            out.update(d)
            continue
        for part in v.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise SystemExit(f"--metadata: expected JSON or key=value, got {part!r}")
            k, val = part.split("=", 1)
            try:
                out[k.strip()] = ast.literal_eval(val.strip())
            except (ValueError, SyntaxError):
                out[k.strip()] = val.strip()
    return out


def progress(args) -> bool:
    """Whether progress is shown (no ``--no_progress``)."""
    return not getattr(args, "no_progress", False)


def announce(args, what: str, items: Sequence[Any], store: RecordStore, out: Path,
             keys: Sequence[str] | None = None) -> None:
    """One line before a long loop: how many items, how many already done (resumed), where records go."""
    if not progress(args):
        return
    keys = list(keys) if keys is not None else [item_key(it) for it in items]
    done = sum(store.done(k) for k in keys)
    tasks = list(dict.fromkeys(it.meta["task"] for it in items))
    print(f"{what}: {len(items)} items of {len(tasks)} task(s) ({', '.join(tasks)}), "
          f"{done} already in {store.path.relative_to(out) if store.path.is_relative_to(out) else store.path}; "
          f"batch size {getattr(args, 'batch_size', 1)}", file=sys.stderr, flush=True)


def tasks_of(args) -> list[str]:
    """The ``--tasks`` list."""
    return [t.strip() for t in (args.tasks or "").split(",") if t.strip()]


def chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    """Fixed chunks of ``n`` (so an item sees the same batch whether a run was resumed or not)."""
    n = max(1, int(n))
    return [items[i:i + n] for i in range(0, len(items), n)]


def by_task(recs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by ``task``, in first-seen order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        out.setdefault(r["task"], []).append(r)
    return out


# ---- model and items ----------------------------------------------------------------------------------------


def load_lm(args, *, calibrating: bool = False):
    """The engine and run settings from ``--model_args`` plus ``--device``
    (:class:`audio_tasks.loaded.LoadedModel`: :func:`interventions.load_engine`, no lm-eval object).
    ``calibrating``: K, gap, seed and alphas configure the calibration (with ``steer=none`` they are otherwise
    refused as ignored)."""
    from lm_eval.utils import simple_parse_args_string

    from audio_tasks.loaded import LoadedModel
    from interventions.config import CALIBRATION_ARGS, SteerConfig

    kw = simple_parse_args_string(args.model_args or "")
    if getattr(args, "device", None) and "device" not in kw:
        kw["device"] = args.device
    if not calibrating or str(kw.get("steer", "none") or "none").strip().lower() != "none":
        return LoadedModel.from_model_args(kw)
    cal = {k: kw.pop(k) for k in CALIBRATION_ARGS if k in kw}
    cfg = SteerConfig.from_kwargs(cal, calibrating=True)  # parsed (named errors) before the model loads
    return LoadedModel.from_model_args(kw, steer_cfg=cfg)


def load_items(lm, tasks: Sequence[str], split: str | None, metadata: dict[str, Any], limit: int | None):
    """MCItems of the tasks in the order given (see ``audio_tasks.items.task_items``)."""
    from audio_tasks.items import task_items

    return task_items(lm, list(tasks), split=split, metadata=dict(metadata), limit=limit)


def item_key(it, prefix: str = "") -> str:
    """The record key of an item: ``<prefix><task>|<clip id>``."""
    return f"{prefix}{it.meta['task']}|{it.meta.get('clip_id', it.meta.get('doc_id'))}"


def item_golds(it) -> list[int]:
    """Every choice index that counts as correct (MMAU: each option whose text is the answer)."""
    return [int(g) for g in (it.meta.get("golds") or [it.meta["gold"]])]


def item_fields(it) -> dict[str, Any]:
    """The fields every per-item record starts with (task, track, prompt format, ids, gold(s), label, choices)."""
    from analysis.critical import parse_task

    track, fmt = parse_task(it.meta["task"])
    return {"task": it.meta["task"], "track": track, "prompt_format": fmt, "doc_id": it.meta.get("doc_id"),
            "clip_id": it.meta.get("clip_id"), "gold": int(it.meta["gold"]), "golds": item_golds(it),
            "label": it.meta.get("label"),
            "choices": it.meta.get("choices")}


def run_meta(lm, args, analysis: str, **extra) -> dict[str, Any]:
    """The ``meta`` block of every summary JSON (model, revision, tasks, split, seeds, metadata, version, ...)."""
    from analysis.critical import parse_task

    md = parse_metadata(args.metadata)
    return {"analysis": analysis, "model": getattr(lm, "model_name", lm.pretrained), "model_path": lm.pretrained,
            "revision": lm.revision, "model_args": args.model_args,
            "dtype": str(lm.engine.dtype).replace("torch.", ""), "tasks": tasks_of(args),
            "split": getattr(args, "split", None), "seed": args.seed, "split_seed": md.get("split_seed", 0),
            "metadata": md, "limit": args.limit, "package_version": package_version(),
            "prompt_formats": {t: parse_task(t)[1] for t in tasks_of(args)},
            "num_layers": lm.engine.num_layers, "num_heads": lm.spec.num_heads(lm.model), **extra}


# ---- the model-command preamble ---------------------------------------------------------------------------------


def pin_settings(out: Path, analysis: str, settings: dict[str, Any], overwrite: bool, files: Sequence[str]) -> None:
    """Refuse to resume into a folder made with other settings (unless --overwrite, which starts afresh)."""
    pin = out / f"{analysis}_run.json"
    settings = json_safe(settings)
    if overwrite:
        for f in files:
            (out / f).unlink(missing_ok=True)
    elif pin.exists():
        old = json.loads(pin.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise SystemExit(f"{out} holds a {analysis} run with other settings ({', '.join(diff)}); use another "
                             f"--out, or --overwrite to start afresh")
    write_json(pin, settings)


@dataclass
class ModelRun:
    """A started model command: output folder, model, items per split, record store."""

    args: argparse.Namespace
    analysis: str
    out: Path
    lm: Any
    items: dict[str | None, list[Any]]
    store: RecordStore

    def meta(self, **extra) -> dict[str, Any]:
        """The summary ``meta`` block (:func:`run_meta`)."""
        return run_meta(self.lm, self.args, self.analysis, **extra)


def start_run(args, analysis: str, *, splits: Sequence[str | None] | None = None, **settings) -> ModelRun:
    """The preamble of a resumable model command: make ``--out``, load the model and the items of each split
    (default: ``--split``), pin the settings (``settings`` on top of model, tasks, split, metadata) and open
    ``<out>/<analysis>_records.jsonl`` (``--overwrite`` discards it)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = parse_metadata(args.metadata)
    lm = load_lm(args)
    splits = [getattr(args, "split", None)] if splits is None else list(splits)
    items = {split: load_items(lm, tasks_of(args), split, md, args.limit) for split in splits}
    # Pinned only once the model and the items loaded: a run that fails on its inputs pins nothing.
    records = f"{analysis}_records.jsonl"
    pinned = {"analysis": analysis, "model_args": args.model_args, "tasks": tasks_of(args),
              "split": getattr(args, "split", None), "metadata": md, **settings}
    pin_settings(out, analysis, pinned, args.overwrite, [records])
    return ModelRun(args, analysis, out, lm, items, RecordStore(out / records))
