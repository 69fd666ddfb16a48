"""Read lm-eval 0.4.13 output folders (``--output_path DIR --log_samples``) into :class:`Run` objects.

Layout written by ``lm_eval.loggers.EvaluationTracker`` (0.4.13)::

    DIR/<model_name_sanitized>/results_<date_id>.json
    DIR/<model_name_sanitized>/samples_<task>_<date_id>.jsonl      (one per task, only with --log_samples)

``model_name_sanitized`` comes from ``pretrained=`` (``/`` -> ``__``); without ``pretrained`` it is
``audio-lalm-reference`` for ``audio_lalm`` (the embedded model, named by ``audio_tasks._startup``) and a random
8-character id for other lm-eval models; ``date_id`` is ``datetime.now().isoformat()`` with ``:`` -> ``-`` and is
shared by the results file and its samples files. ``results["config"]["model_args"]`` is the string given to
``simple_evaluate`` or, from the ``lm-eval run`` CLI, a dict.

Each sample line holds ``doc_id`` (lm-eval's integer index), ``doc`` (the task document, whose ``doc_id`` field
is our stable clip/question id, see docs/CONTRACTS.md), ``filter``, ``metrics`` (names) and one key per
metric (e.g. ``"acc": 1.0``, ``"acc_first_token": 0.0``).

Folder rules: every folder under the given path that holds ``results_*.json`` is read. Results files in the
same folder are grouped by (model id, intervention configuration): one :class:`Run` per group, and for each task
the newest results file (by ``date_id``) that evaluated it wins, so re-running a configuration replaces its old
numbers while runs of other configurations written to the same folder (same ``pretrained``) are kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from lm_eval.utils import get_file_datetime, get_file_task_name, sanitize_task_name

from audio_tasks.model_args import LOAD_ARGS

from .atomic import iter_jsonl

__all__ = [
    "EMBEDDED_MODEL",
    "NON_INTERVENTION_KEYS",
    "Pairing",
    "ResultsError",
    "Run",
    "TaskResult",
    "format_model_args",
    "is_unsteered",
    "pair_docs",
    "parse_model_args",
    "read_many",
    "read_run",
    "read_runs",
    "split_model_args",
]

from audio_tasks.reference import REFERENCE_MODEL_NAME as EMBEDDED_MODEL  # noqa: E402  "audio-lalm-reference"

"""Model id used when the model args carry no ``pretrained=`` (the model's built-in default checkpoint)."""

NON_INTERVENTION_KEYS = frozenset(LOAD_ARGS) | frozenset(
    {"torch_dtype", "device_map", "cache_dir", "local_files_only"}  # lm-eval / HF loading keys other models take
)
"""Model-args keys that select/load/run the model rather than configure an intervention: the adapter's
``audio_tasks.model_args.LOAD_ARGS`` plus common loading keys of other lm-eval models."""

_NO_STEER = frozenset({"", "none", "null", "off", "false", "no", "0"})


class ResultsError(Exception):
    """lm-eval output that is missing, incomplete or unreadable (the message names the folder or file)."""


# ---------------------------------------------------------------------------------------------------------
# model args
# ---------------------------------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    """Split ``a=1,b=[2,3]`` on commas outside brackets/quotes."""
    parts: list[str] = []
    depth, quote, cur = 0, "", []
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _value_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return str(value)
    return json.dumps(value, sort_keys=True)


def parse_model_args(model_args: str | Mapping[str, Any] | None) -> dict[str, str]:
    """Parse lm-eval model args (``"k=v,k=v"`` string or dict) into an ordered ``{key: value-string}``."""
    if model_args is None:
        return {}
    if isinstance(model_args, Mapping):
        return {str(k): _value_str(v) for k, v in model_args.items()}
    out: dict[str, str] = {}
    for part in _split_top_level(str(model_args)):
        key, sep, value = part.partition("=")
        out[key.strip()] = value.strip() if sep else "True"
    return out


def format_model_args(args: Mapping[str, str]) -> str:
    """Inverse of :func:`parse_model_args` for display: ``k=v,k=v`` (insertion order)."""
    return ",".join(f"{k}={v}" for k, v in args.items())


def split_model_args(args: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Split parsed model args into (model id, intervention configuration).

    The model id is ``pretrained`` (``@revision`` appended when given), or :data:`EMBEDDED_MODEL`; the
    configuration is every key not in :data:`NON_INTERVENTION_KEYS` (steer, alpha, K, control, seed, ...).
    """
    model = args.get("pretrained") or EMBEDDED_MODEL
    if args.get("revision"):
        model = f"{model}@{args['revision']}"
    config = {k: v for k, v in args.items() if k not in NON_INTERVENTION_KEYS}
    return model, config


def is_unsteered(config: Mapping[str, str]) -> bool:
    """True when the configuration applies no steering (``steer`` absent or none/off/false/...)."""
    return str(config.get("steer", "none")).strip().lower() in _NO_STEER


# ---------------------------------------------------------------------------------------------------------
# data classes
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """Per-document results of one task: ``metrics[name][i]`` is the value for ``doc_ids[i]``."""

    name: str
    doc_ids: list[str]
    metrics: dict[str, np.ndarray]
    samples_file: Path
    reported: dict[str, Any] = field(default_factory=dict)
    """The task's entry in ``results["results"]`` (lm-eval's own aggregate, e.g. ``"acc,none"``)."""

    @property
    def n(self) -> int:
        return len(self.doc_ids)

    def has(self, metric: str) -> bool:
        return metric in self.metrics

    def values(self, metric: str = "acc") -> np.ndarray:
        """Per-doc values of ``metric``; ``KeyError`` naming the available metrics when absent."""
        try:
            return self.metrics[metric]
        except KeyError:
            raise KeyError(
                f"task {self.name!r} has no per-sample metric {metric!r} (has: {sorted(self.metrics)}) "
                f"in {self.samples_file}"
            ) from None

    def correct(self, metric: str = "acc") -> np.ndarray:
        """Per-doc correctness (bool) for a 0/1 metric such as ``acc`` / ``acc_first_token``."""
        v = self.values(metric)
        if not np.all((v == 0) | (v == 1)):
            raise ValueError(f"metric {metric!r} of task {self.name!r} is not 0/1 per document")
        return v.astype(bool)

    def by_doc(self, metric: str = "acc") -> dict[str, float]:
        return dict(zip(self.doc_ids, self.values(metric).tolist()))

    def accuracy(self, metric: str = "acc") -> float:
        v = self.values(metric)
        return float(v.mean()) if v.size else math.nan


@dataclass
class Run:
    """One evaluated (model, intervention configuration) read from an lm-eval output folder."""

    source: Path
    """The model folder (``DIR/<model_name_sanitized>``) the run was read from."""
    results_files: list[Path]
    """Results files that contributed tasks, newest first."""
    model_args: str
    """``results["config"]["model_args"]`` as a ``k=v,...`` string."""
    model: str
    """Model id: ``pretrained`` or :data:`EMBEDDED_MODEL`."""
    config: dict[str, str]
    """Intervention configuration: model args other than :data:`NON_INTERVENTION_KEYS`."""
    tasks: dict[str, TaskResult]
    lm_eval_model: str = ""
    """``results["config"]["model"]`` (the registered model name, e.g. ``audio_lalm``)."""

    @property
    def steered(self) -> bool:
        return not is_unsteered(self.config)

    @property
    def config_str(self) -> str:
        return format_model_args(self.config)

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """Identity of the row: model id + sorted configuration."""
        return (self.model, tuple(sorted(self.config.items())))

    @property
    def label(self) -> str:
        return f"{self.model} [{self.config_str or 'no intervention'}]"

    def accuracy(self, task: str, metric: str = "acc") -> float:
        return self.tasks[task].accuracy(metric)


# ---------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------


def _date_id(path: Path) -> str:
    """``results_2025-01-01T12-00-00.123456.json`` -> ``2025-01-01T12-00-00.123456`` (lm-eval's own helper,
    ``lm_eval.utils.get_file_datetime``, which strips ``.jsonl`` only)."""
    return get_file_datetime(path.name.removesuffix(".json"))


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read lm-eval results file {path}: {exc}") from exc
    if not isinstance(data, dict) or "results" not in data:
        raise ResultsError(f"{path} is not an lm-eval results file (no 'results' key)")
    return data


def _samples_file(folder: Path, task: str, date_id: str) -> Path | None:
    exact = folder / f"samples_{task}_{date_id}.jsonl"
    if exact.is_file():
        return exact
    for cand in folder.glob(f"samples_*_{date_id}.jsonl"):  # tolerate sanitised task names
        if sanitize_task_name(get_file_task_name(cand.name)) == sanitize_task_name(task):
            return cand
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, bool))


def read_task_samples(path: Path, task: str, reported: dict[str, Any] | None = None) -> TaskResult:
    """Read one ``samples_<task>_<date>.jsonl`` file.

    Doc ids: the document's own ``doc_id`` field when present (stable clip/question id), else lm-eval's index;
    repeated ids get a ``#k`` suffix in file order. With several filters, the ``none`` filter (else the first
    one seen) is used.
    """
    rows: list[dict[str, Any]] = []
    try:
        rows = [r for r in iter_jsonl(path) if isinstance(r, dict)]
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read samples file {path}: {exc}") from exc
    if not rows:
        raise ResultsError(f"samples file {path} has no samples")
    filters = [r.get("filter", "none") for r in rows]
    chosen = "none" if "none" in filters else filters[0]
    rows = [r for r, f in zip(rows, filters) if f == chosen]
    rows.sort(key=lambda r: (r.get("doc_id") if isinstance(r.get("doc_id"), int) else 0))

    names: list[str] = []
    for r in rows:
        for m in r.get("metrics", []):
            if m not in names and all(_is_number(x.get(m)) for x in rows):
                names.append(m)
    doc_ids: list[str] = []
    seen: dict[str, int] = {}
    for r in rows:
        doc = r.get("doc")
        raw = doc.get("doc_id") if isinstance(doc, dict) and doc.get("doc_id") is not None else r.get("doc_id")
        did = str(raw)
        k = seen.get(did, 0)
        seen[did] = k + 1
        doc_ids.append(did if k == 0 else f"{did}#{k}")
    metrics = {m: np.asarray([float(r[m]) for r in rows], dtype=float) for m in names}
    return TaskResult(task, doc_ids, metrics, path, dict(reported or {}))


def check_samples_against_results(tr: TaskResult, data: dict[str, Any], results_file: Path) -> None:
    """Refuse a samples file that disagrees with its results file (a truncated or replaced ``--log_samples``
    file): the number of samples must be the results file's ``n-samples`` and the accuracy its ``acc``."""
    n_info = (data.get("n-samples") or {}).get(tr.name) or {}
    expected = n_info.get("effective") if isinstance(n_info, dict) else None
    if _is_number(expected) and int(expected) != tr.n:
        raise ResultsError(f"samples file {tr.samples_file} holds {tr.n} samples of {tr.name} but the results file "
                           f"{results_file} counts {int(expected)} (n-samples.effective): the samples file is "
                           "truncated or belongs to another run; re-run lm_eval with --log_samples")
    reported = (data.get("results") or {}).get(tr.name) or {}
    acc = reported.get("acc,none")
    if _is_number(acc) and tr.has("acc") and tr.n:
        mine = float(np.mean(tr.metrics["acc"]))
        if abs(mine - float(acc)) > 1e-9:
            raise ResultsError(f"samples file {tr.samples_file} gives {tr.name} accuracy {mine:.6f} but the results "
                               f"file {results_file} reports {float(acc):.6f}: the files do not belong together")


def _find_results(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ResultsError(f"{path} does not exist")
    # The glob is lm_eval.utils.get_results_filenames' rule ("/results_" and ".json") applied to file names;
    # that helper filters path strings of a hub listing and would miss a results file named without a folder.
    return sorted(p for p in path.rglob("results_*.json") if p.is_file())


def read_runs(path: str | Path) -> list[Run]:
    """Read every run under ``path`` (an ``--output_path`` folder, a model subfolder or a results file).

    Raises :class:`ResultsError` naming the folder when it holds no results file, or when a task of the run has
    no samples file (the run was made without ``--log_samples``).
    """
    root = Path(path)
    files = _find_results(root)
    if not files:
        raise ResultsError(
            f"no lm-eval results (results_*.json) found under {root}; "
            f"run lm_eval with --output_path {root} --log_samples"
        )
    groups: dict[tuple[Path, tuple[str, tuple[tuple[str, str], ...]]], list[tuple[Path, dict[str, Any]]]] = {}
    for f in files:
        data = _load_json(f)
        cfg = data.get("config") or {}
        args = parse_model_args(cfg.get("model_args"))
        model, config = split_model_args(args)
        key = (f.parent, (model, tuple(sorted(config.items()))))
        groups.setdefault(key, []).append((f, data))

    runs: list[Run] = []
    for (folder, _), members in groups.items():
        members.sort(key=lambda m: (_date_id(m[0]), m[0].stat().st_mtime), reverse=True)
        newest_cfg = members[0][1].get("config") or {}
        args = parse_model_args(newest_cfg.get("model_args"))
        model, config = split_model_args(args)
        tasks: dict[str, TaskResult] = {}
        used: list[Path] = []
        for f, data in members:
            task_names = list((data.get("configs") or {}).keys()) or [
                t for t in (data.get("results") or {}) if t not in (data.get("groups") or {})
            ]
            contributed = False
            for task in task_names:
                if task in tasks:
                    continue
                sf = _samples_file(folder, task, _date_id(f))
                if sf is None:
                    raise ResultsError(
                        f"no per-sample file samples_{task}_{_date_id(f)}.jsonl next to {f} (folder {folder}); "
                        "re-run lm_eval with --log_samples"
                    )
                tasks[task] = read_task_samples(sf, task, (data.get("results") or {}).get(task))
                check_samples_against_results(tasks[task], data, f)
                contributed = True
            if contributed:
                used.append(f)
        if not tasks:
            raise ResultsError(f"results in {folder} list no tasks")
        runs.append(
            Run(
                source=folder,
                results_files=used,
                model_args=format_model_args(args),
                model=model,
                config=config,
                tasks=tasks,
                lm_eval_model=str(newest_cfg.get("model", "")),
            )
        )
    runs.sort(key=lambda r: (r.model, r.steered, r.config_str, str(r.source)))
    return runs


def read_run(path: str | Path) -> Run:
    """Read exactly one run from ``path``; :class:`ResultsError` listing them if there are several."""
    runs = read_runs(path)
    if len(runs) > 1:
        listing = "\n  ".join(f"{r.label}  ({r.source})" for r in runs)
        raise ResultsError(
            f"{path} holds {len(runs)} runs; pass the results file or model folder of one of them:\n  {listing}"
        )
    return runs[0]


def read_many(paths: Iterable[str | Path]) -> list[Run]:
    """Read and concatenate the runs of several paths."""
    out: list[Run] = []
    for p in paths:
        out.extend(read_runs(p))
    return out


@dataclass
class Pairing:
    """Two tasks' per-doc values aligned by doc id (``a``/``b`` follow ``doc_ids``)."""

    doc_ids: list[str]
    a: np.ndarray
    b: np.ndarray
    only_a: list[str]
    """Doc ids present in ``a`` only."""
    only_b: list[str]
    """Doc ids present in ``b`` only."""

    @property
    def same_docs(self) -> bool:
        return not self.only_a and not self.only_b

    def describe_mismatch(self) -> str:
        """Human-readable doc-set difference, e.g. ``"2 docs only in baseline (x.wav, y.wav)"``."""

        def _few(ids: list[str]) -> str:
            shown = ", ".join(ids[:3])
            return shown + (", ..." if len(ids) > 3 else "")

        parts = []
        for ids, where in ((self.only_a, "baseline"), (self.only_b, "candidate")):
            if ids:
                parts.append(f"{len(ids)} doc{'s' if len(ids) > 1 else ''} only in {where} ({_few(ids)})")
        return "; ".join(parts) or "same docs"


def pair_docs(a: TaskResult, b: TaskResult, metric: str = "acc") -> Pairing:
    """Align ``metric`` of two runs of a task on their common doc ids (order of ``a``)."""
    va, vb = a.by_doc(metric), b.by_doc(metric)
    common = [d for d in a.doc_ids if d in vb]
    return Pairing(
        doc_ids=common,
        a=np.asarray([va[d] for d in common], dtype=float),
        b=np.asarray([vb[d] for d in common], dtype=float),
        only_a=[d for d in a.doc_ids if d not in vb],
        only_b=[d for d in b.doc_ids if d not in va],
    )
