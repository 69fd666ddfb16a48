"""``python -m analysis <command>``: the interpretability analyses as resumable command-line runs.

Commands (``python -m analysis <command> -h`` for all options)::

    lens       logit lens: information scores per layer/position, correct vs wrong, audio-masked last token,
               critical layers and their correlation with accuracy (AudioLens)
    trace      causal tracing: clean / silence-corrupted / patched runs, layer-wise and token-wise RR
    heads      audio-specialist heads, listening score AUC vs random heads, flip test
    calibrate  calibration artifact for the interventions (audio_tasks.calibration.run_calibration) + sweep
               figure with random-head controls
    critical   Tables II/III over several lens runs (e.g. several models)
    report     Markdown report of run folders
    compare    paired comparison of two lm-eval --log_samples runs (analysis.regress)
    mmau       MMAU accuracy by domain / difficulty / category / sub-category from a --log_samples run
    leaderboard, regress, demo   provided by analysis.leaderboard / analysis.regress / analysis.demo

Model commands share ``--model_args`` (parsed like lm-eval's and passed to ``audio_tasks.model.AudioLALM``,
the one model-loading path; default empty = the embedded reference model, as ``lm_eval --model audio_lalm``),
``--tasks``, ``--metadata``, ``--split``, ``--limit``, ``--batch_size``, ``--out``.

Outputs (every summary JSON has ``meta``: analysis, model, revision, model_args, dtype, tasks, split, seed,
split_seed, metadata, limit, package_version, prompt_formats, num_layers, num_heads):

* lens: ``lens_records.jsonl`` (per item: gold, choices, choice first-token ids, prediction, the tokens at the
  positions, log-probs (L+1 x C) at ``last`` / ``penultimate`` / ``masked_last``), ``lens_summary.json`` (per task:
  accuracy, I^l per position for all / correct / incorrect items, critical layers; ``critical``: rows, Table II,
  Table III), ``lens_info.csv`` (long format), ``critical.csv``, ``figures/lens_{layers,correct_wrong,positions}``;
* trace: ``trace_records.jsonl`` (per item: P_clean, P_corrupted, predictions, exclusion reasons, layer-wise
  P/RR, token-wise positions/tokens/segments/P/RR), ``trace_summary.json`` (per task: exclusion counts, RR by
  layer mean/std/sem/n, by segment x layer, by position from the end), ``trace_layer.csv``,
  ``trace_segments.csv``, ``trace_items.csv``, ``figures/trace_{rr_layers,tokens_<task>,segments_<task>}``;
* heads: ``heads_records.jsonl`` (per item and split: audio mass L x H, first-token log-probs with audio and
  silence, correct, flip), ``heads_summary.json`` (r matrix, specialists with r/p, AUC vs random head sets,
  flip test), ``head_corr.csv``, ``heads_scores.csv`` (evaluation split: listening score), ``figures/heads_corr``;
* calibrate: ``calibration.json`` + ``calibration.safetensors`` (the artifact), ``calibration_controls.json``
  (layer-guided sweeps of random head sets, seeds 0..n-1, and of the specialists on the same data),
  ``figures/sweep``;
* critical: ``critical_tables.json``, ``critical_rows.csv``, ``critical_table_ii.csv``, ``critical_table_iii.csv``;
* report: ``report.md`` (+ ``report_figures/`` when several trace runs are combined).

Resuming: per-item records are appended (one JSON line each, fsynced) to ``<out>/<analysis>_records.jsonl`` as
items finish, keyed by task + clip id; rerunning the same command skips finished items and recomputes the
summaries from the records, so an interrupted and resumed run writes the same files as an uninterrupted one
(items are batched in fixed chunks of the item list, so every item sees the same batch whether resumed or not).
``<out>/<analysis>_run.json`` pins the settings; a rerun with other settings into the same folder is refused
(``--overwrite`` starts afresh).  Summaries (JSON, CSV, figures) are written atomically.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from analysis.atomic import append_jsonl, atomic_write_json, atomic_write_text, json_safe, read_jsonl, sweep_stale_temps

__all__ = ["main", "build_parser", "load_lm", "load_items", "RecordStore"]

LAZY = {"leaderboard": ("analysis.leaderboard", "add_arguments", "main"),
        "regress": ("analysis.regress", "add_arguments", "main"),
        "compare": ("analysis.regress", "add_compare_arguments", "compare_main"),
        "mmau": ("analysis.mmau_breakdown", "add_arguments", "main")}


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


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    fields = list(fields or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return atomic_write_text(path, buf.getvalue())


_json_safe = json_safe  # one home: interventions.atomic.json_safe


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write_json(path, _json_safe(obj))


class RecordStore:
    """Append-only JSONL of per-item records keyed by ``record['key']``; the last record of a key wins."""

    def __init__(self, path: Path):
        self.path = Path(path)
        sweep_stale_temps(self.path.parent)  # left by a kill during an atomic write; resuming cleans up
        self.records: dict[str, dict[str, Any]] = {}
        for r in read_jsonl(self.path):
            if isinstance(r, dict) and "key" in r:
                self.records[str(r["key"])] = r

    def done(self, key: str) -> bool:
        return key in self.records

    def add(self, rec: dict[str, Any]) -> None:
        rec = _json_safe(rec)
        append_jsonl(self.path, rec)
        self.records[str(rec["key"])] = rec

    def ordered(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        return [self.records[k] for k in keys if k in self.records]


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False)


def _announce(args, what: str, items: Sequence[Any], store: "RecordStore", out: Path,
              keys: Sequence[str] | None = None) -> None:
    """One line before a long loop: how many items, how many already done (resumed), where records go."""
    if not _progress(args):
        return
    keys = list(keys) if keys is not None else [item_key(it) for it in items]
    done = sum(store.done(k) for k in keys)
    tasks = list(dict.fromkeys(it.meta["task"] for it in items))
    print(f"{what}: {len(items)} items of {len(tasks)} task(s) ({', '.join(tasks)}), "
          f"{done} already in {store.path.relative_to(out) if store.path.is_relative_to(out) else store.path}; "
          f"batch size {getattr(args, 'batch_size', 1)}", file=sys.stderr, flush=True)


# ---- model and items ----------------------------------------------------------------------------------------


def load_lm(args, *, calibrating: bool = False):
    """``AudioLALM`` from ``--model_args`` (the one loading path) plus ``--device``.  ``calibrating``: K, gap,
    seed and alphas configure the calibration (with ``steer=none`` they are otherwise refused as ignored)."""
    from lm_eval.utils import simple_parse_args_string

    from audio_tasks.model import AudioLALM
    from interventions.config import CALIBRATION_ARGS, SteerConfig

    kw = simple_parse_args_string(args.model_args or "")
    if getattr(args, "device", None) and "device" not in kw:
        kw["device"] = args.device
    if not calibrating or str(kw.get("steer", "none") or "none").strip().lower() != "none":
        return AudioLALM(**kw)
    cal = {k: kw.pop(k) for k in CALIBRATION_ARGS if k in kw}
    cfg = SteerConfig.from_kwargs(cal, calibrating=True)  # parsed (named errors) before the model loads
    lm = AudioLALM(**kw)
    lm.steer_cfg = cfg
    return lm


def load_items(lm, tasks: Sequence[str], split: str | None, metadata: dict[str, Any], limit: int | None):
    """MCItems of the tasks in the order given (see ``audio_tasks.items.task_items``)."""
    from audio_tasks.items import task_items

    return task_items(lm, list(tasks), split=split, metadata=dict(metadata), limit=limit)


def item_key(it, prefix: str = "") -> str:
    return f"{prefix}{it.meta['task']}|{it.meta.get('clip_id', it.meta.get('doc_id'))}"


def item_golds(it) -> list[int]:
    """Every choice index that counts as correct (MMAU: each option whose text is the answer)."""
    return [int(g) for g in (it.meta.get("golds") or [it.meta["gold"]])]


def item_fields(it) -> dict[str, Any]:
    from analysis.critical import parse_task

    track, fmt = parse_task(it.meta["task"])
    return {"task": it.meta["task"], "track": track, "prompt_format": fmt, "doc_id": it.meta.get("doc_id"),
            "clip_id": it.meta.get("clip_id"), "gold": int(it.meta["gold"]), "golds": item_golds(it),
            "label": it.meta.get("label"),
            "choices": it.meta.get("choices")}


def run_meta(lm, args, analysis: str, **extra) -> dict[str, Any]:
    from analysis.critical import parse_task

    md = parse_metadata(args.metadata)
    return {"analysis": analysis, "model": getattr(lm, "model_name", lm.pretrained), "model_path": lm.pretrained,
            "revision": lm.revision, "model_args": args.model_args,
            "dtype": str(lm.engine.dtype).replace("torch.", ""), "tasks": _tasks(args),
            "split": getattr(args, "split", None), "seed": args.seed, "split_seed": md.get("split_seed", 0),
            "metadata": md, "limit": args.limit, "package_version": package_version(),
            "prompt_formats": {t: parse_task(t)[1] for t in _tasks(args)},
            "num_layers": lm.engine.num_layers, "num_heads": lm.spec.num_heads(lm.model), **extra}


def _tasks(args) -> list[str]:
    return [t.strip() for t in (args.tasks or "").split(",") if t.strip()]


def _pin_settings(out: Path, analysis: str, settings: dict[str, Any], overwrite: bool, files: Sequence[str]) -> None:
    """Refuse to resume into a folder made with other settings (unless --overwrite, which starts afresh)."""
    pin = out / f"{analysis}_run.json"
    settings = _json_safe(settings)
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


def _settings(args, analysis: str, **extra) -> dict[str, Any]:
    return {"analysis": analysis, "model_args": args.model_args, "tasks": _tasks(args),
            "split": getattr(args, "split", None), "metadata": parse_metadata(args.metadata), **extra}


def _chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    n = max(1, int(n))
    return [items[i:i + n] for i in range(0, len(items), n)]


def _by_task(recs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        out.setdefault(r["task"], []).append(r)
    return out


# ---- lens ----------------------------------------------------------------------------------------------------


def cmd_lens(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from analysis import lens

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(args)
    md = parse_metadata(args.metadata)
    lm = load_lm(args)
    engine = lm.engine
    items = load_items(lm, tasks, args.split, md, args.limit)
    # Pinned only once the model and the items loaded: a run that fails on its inputs pins nothing.
    _pin_settings(out, "lens", _settings(args, "lens", masked=not args.no_masked, batch_size=args.batch_size),
                  args.overwrite, ["lens_records.jsonl"])
    store = RecordStore(out / "lens_records.jsonl")
    keys = [item_key(it) for it in items]
    _announce(args, "lens", items, store, out)
    bar = tqdm(total=len(items), desc="lens", unit="item", disable=not _progress(args))
    bar.update(sum(store.done(k) for k in keys))
    for chunk in _chunks(items, args.batch_size):
        ck = [item_key(it) for it in chunk]
        if all(store.done(k) for k in ck):
            continue
        bar.set_postfix_str(chunk[0].meta["task"], refresh=True)
        res = lens.lens_batch(engine, chunk, masked=not args.no_masked)
        for it, k, r in zip(chunk, ck, res):
            if store.done(k):
                continue
            lp_last = r.logp["last"][-1]
            store.add({"key": k, **item_fields(it), "choice_ids": r.choice_ids, "tokens": r.tokens,
                       "pred": int(np.argmax(lp_last)), "correct": int(np.argmax(lp_last)) in item_golds(it),
                       "logp": {name: arr.tolist() for name, arr in r.logp.items()}})
            bar.update(1)
    bar.close()
    summary = lens_summary(store.ordered(keys), run_meta(lm, args, "lens"), alpha=args.alpha,
                           exclude_tracks=args.exclude_track)
    write_lens_outputs(summary, out)
    print(f"lens: {len(keys)} items, summary in {out / 'lens_summary.json'}")
    return 0


def lens_summary(recs: Sequence[dict[str, Any]], meta: dict[str, Any], *, alpha: float = 0.2,
                 exclude_tracks: Sequence[str] = ()) -> dict[str, Any]:
    import numpy as np

    from analysis import critical, lens

    tasks: dict[str, Any] = {}
    rows: list[critical.CriticalRow] = []
    for task, rs in _by_task(recs).items():
        def arr(v):  # JSON null = -inf log-prob (non-finite values are stored as null)
            return np.asarray([[-np.inf if x is None else x for x in row] for row in v], dtype=float)

        tab = lens.lens_table([{k: arr(v) for k, v in r["logp"].items()} for r in rs],
                              [r.get("golds") or r["gold"] for r in rs],
                              n_labels=len(rs[0]["choices"] or rs[0]["choice_ids"]))
        d = tab.as_dict()
        track, fmt = critical.parse_task(task)
        d.update(track=track, prompt=fmt, critical_layer={})
        for pos, info in tab.info.items():
            cl = critical.critical_layer(info, tab.n_labels, alpha)
            d["critical_layer"][pos] = None if math.isnan(cl) else cl
            rows.append(critical.CriticalRow(meta.get("model", ""), task, track, fmt, pos, tab.accuracy, cl, tab.n,
                                             tab.n_labels))
        tasks[task] = d
    positions = sorted({r.position for r in rows})
    crit = {"alpha": alpha, "rows": [r.as_dict() for r in rows], "table_ii": critical.table_ii(rows),
            "table_iii": {p: critical.table_iii(rows, p, exclude_tracks) for p in positions}}
    return {"meta": meta, "tasks": tasks, "critical": crit}


def write_lens_outputs(summary: dict[str, Any], out: Path) -> None:
    from analysis import figures

    write_json(out / "lens_summary.json", summary)
    model = summary["meta"].get("model", "")
    rows = []
    for task, t in summary["tasks"].items():
        for subset, key in (("all", "info"), ("correct", "info_correct"), ("incorrect", "info_incorrect")):
            n = {"all": t["n"], "correct": t["n_correct"], "incorrect": t["n"] - t["n_correct"]}[subset]
            for pos, vals in t[key].items():
                for layer, v in enumerate(vals):
                    rows.append({"model": model, "task": task, "track": t["track"], "prompt": t["prompt"],
                                 "position": pos, "subset": subset, "layer": layer, "info": v, "n": n})
    write_csv(out / "lens_info.csv", rows,
              ["model", "task", "track", "prompt", "position", "subset", "layer", "info", "n"])
    write_csv(out / "critical.csv", summary["critical"]["rows"],
              ["model", "task", "track", "prompt", "position", "accuracy", "critical_layer", "n", "n_labels"])
    figures.lens_figures(summary, out / "figures")


# ---- critical (several lens runs) --------------------------------------------------------------------------


def cmd_critical(args) -> int:
    from analysis import critical

    rows = []
    for d in args.runs:
        p = Path(d)
        f = p / "lens_summary.json" if p.is_dir() else p
        sm = json.loads(f.read_text())
        model = sm.get("meta", {}).get("model", str(p))
        for task, t in sm["tasks"].items():
            for pos, info in t["info"].items():
                rows.append(critical.CriticalRow(model, task, t["track"], t["prompt"], pos, t["accuracy"],
                                                 critical.critical_layer([math.nan if v is None else v for v in info],
                                                                         t["n_labels"], args.alpha),
                                                 t["n"], t["n_labels"]))
    out = Path(args.out)
    t2 = critical.table_ii(rows)
    t3 = [row for p in sorted({r.position for r in rows}) for row in critical.table_iii(rows, p, args.exclude_track)]
    write_json(out / "critical_tables.json", {"alpha": args.alpha, "runs": list(args.runs),
                                              "rows": [r.as_dict() for r in rows],
                                              "table_ii": t2, "table_iii": t3})
    write_csv(out / "critical_rows.csv", [r.as_dict() for r in rows])
    write_csv(out / "critical_table_ii.csv", [dict(r, prompts=";".join(r["prompts"])) for r in t2])
    write_csv(out / "critical_table_iii.csv", [dict(r, exclude_tracks=";".join(r["exclude_tracks"])) for r in t3],
              ["model", "position", "exclude_tracks", "n", "r", "pvalue", "note"])
    for r in t3:
        ex = f" (excluding {', '.join(r['exclude_tracks'])})" if r["exclude_tracks"] else ""
        print(f"{r['model']} [{r['position']}]{ex}: r={r['r']} p={r['pvalue']} n={r['n']}")
    return 0


# ---- trace ---------------------------------------------------------------------------------------------------


def cmd_trace(args) -> int:
    from tqdm import tqdm

    from analysis import tracing

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(args)
    md = parse_metadata(args.metadata)
    lm = load_lm(args)
    items = load_items(lm, tasks, args.split, md, args.limit)
    _pin_settings(out, "trace", _settings(args, "trace", layerwise=not args.no_layerwise,
                                          tokenwise=not args.no_tokenwise, rows=args.rows),
                  args.overwrite, ["trace_records.jsonl"])
    store = RecordStore(out / "trace_records.jsonl")
    keys = [item_key(it) for it in items]
    for it, k in tqdm(list(zip(items, keys)), desc="trace", disable=not _progress(args)):
        if store.done(k):
            continue
        rec = tracing.trace_item(lm.engine, it, layerwise=not args.no_layerwise, tokenwise=not args.no_tokenwise,
                                 rows=args.rows, prefix_cache=not args.no_prefix_cache)
        store.add({"key": k, **item_fields(it), **rec})
    recs = store.ordered(keys)
    summary = {"meta": run_meta(lm, args, "trace", rows=args.rows),
               "tasks": {t: {"track": rs[0]["track"], "prompt": rs[0]["prompt_format"], **tracing.summarize(rs)}
                         for t, rs in _by_task(recs).items()}}
    write_trace_outputs(summary, recs, out)
    print(f"trace: {len(keys)} items, summary in {out / 'trace_summary.json'}")
    return 0


def write_trace_outputs(summary: dict[str, Any], recs: Sequence[dict[str, Any]], out: Path) -> None:
    from analysis import figures

    write_json(out / "trace_summary.json", summary)
    rows, srows = [], []
    for task, st in summary["tasks"].items():
        lw = st.get("layer")
        if lw:
            for i, m in enumerate(lw["mean"]):
                rows.append({"task": task, "layer": i + 1, "rr_mean": m, "rr_std": lw["std"][i], "rr_sem": lw["sem"][i],
                             "n": lw["n"][i]})
        for seg, s in (st.get("segments") or {}).items():
            for i, m in enumerate(s["mean"]):
                srows.append({"task": task, "segment": seg, "layer": i + 1, "rr_mean": m, "rr_std": s["std"][i],
                              "n": s["n"][i]})
    write_csv(out / "trace_layer.csv", rows, ["task", "layer", "rr_mean", "rr_std", "rr_sem", "n"])
    write_csv(out / "trace_segments.csv", srows, ["task", "segment", "layer", "rr_mean", "rr_std", "n"])
    write_csv(out / "trace_items.csv", [dict(r, excluded=";".join(r["excluded"])) for r in recs],
              ["task", "doc_id", "clip_id", "gold", "p_clean", "p_corrupted", "pred_clean", "pred_corrupted",
               "excluded"])
    figures.trace_figures([summary], out / "figures")


# ---- heads ---------------------------------------------------------------------------------------------------


def cmd_heads(args) -> int:
    from tqdm import tqdm

    from analysis import figures, heads
    from interventions.calibrate import collect

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(args)
    md = parse_metadata(args.metadata)
    lm = load_lm(args)
    split_items = {split: load_items(lm, tasks, split, md, args.limit) for split in ("calibration", "evaluation")}
    _pin_settings(out, "heads", _settings(args, "heads", batch_size=args.batch_size), args.overwrite,
                  ["heads_records.jsonl"])
    store = RecordStore(out / "heads_records.jsonl")
    split_recs: dict[str, list[dict[str, Any]]] = {}
    for split in ("calibration", "evaluation"):
        items = split_items[split]
        keys = [item_key(it, f"{split}|") for it in items]
        _announce(args, f"heads ({split} split)", items, store, out, keys)
        bar = tqdm(total=len(items), desc=f"heads ({split})", unit="item", disable=not _progress(args))
        bar.update(sum(store.done(k) for k in keys))
        for chunk in _chunks(list(zip(items, keys)), args.batch_size):
            if all(store.done(k) for _, k in chunk):
                continue
            its = [it for it, _ in chunk]
            bar.set_postfix_str(its[0].meta["task"], refresh=True)
            data = collect(lm.engine, its, batch_size=len(its), attention=True, silence=True, heads=False)
            for (it, k), rec in zip(chunk, heads.records_from_collect(data, its)):
                if not store.done(k):
                    store.add({"key": k, "split": split, **item_fields(it), **rec})
                    bar.update(1)
        bar.close()
        split_recs[split] = store.ordered(keys)
    sm = heads.heads_summary(split_recs["calibration"], split_recs["evaluation"], K=args.K, n_random=args.n_random)
    scores = sm.pop("evaluation_scores", [])
    summary = {"meta": run_meta(lm, args, "heads", K=args.K, n_random=args.n_random, split="calibration+evaluation"),
               **sm}
    write_json(out / "heads_summary.json", summary)
    rank = {(s["layer"], s["head"]): i + 1 for i, s in enumerate(sm["specialists"])}
    rows = [{"layer": l + 1, "head": h, "r": sm["r"][l][h], "mean_mass": sm["mean_mass"][l][h],
             "specialist_rank": rank.get((l + 1, h))}
            for l in range(sm["num_layers"]) for h in range(sm["num_heads"])]
    write_csv(out / "head_corr.csv", rows, ["layer", "head", "r", "mean_mass", "specialist_rank"])
    ev = split_recs["evaluation"]
    write_csv(out / "heads_scores.csv", [{**r, "score": s} for r, s in zip(ev, scores)],
              ["task", "doc_id", "clip_id", "gold", "pred", "pred_silence", "correct", "flip", "score"])
    figures.heads_figures(summary, out / "figures")
    e = sm.get("evaluation", {})
    print(f"heads: K={sm['K']} AUC={e.get('auc')} random={e.get('random_auc', {}).get('mean')} "
          f"flip p={e.get('flip_test', {}).get('p_two_sided')}; summary in {out / 'heads_summary.json'}")
    return 0


# ---- calibrate -----------------------------------------------------------------------------------------------


def cmd_calibrate(args) -> int:
    from analysis import figures
    from audio_tasks.calibration import calibration_items, random_heads, run_calibration
    from interventions.calibrate import collect, sweep_final_layer
    from interventions.steering import layer_weights

    out = Path(args.out)
    tasks = _tasks(args)
    md = parse_metadata(args.metadata)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    valid = ("enrich", "layer_guided", "single_layer", "head")
    bad = [k for k in kinds if k not in valid]
    if bad or not kinds:
        raise SystemExit(f"--kinds: {bad or 'nothing'} given; valid: {', '.join(valid)}")
    if args.random_controls < 0:
        raise SystemExit(f"--random_controls must be >= 0, got {args.random_controls}")
    lm = load_lm(args, calibrating=True)
    sweep_stale_temps(out)
    # Every calibration argument is checked before the first forward pass.
    cfg, L = lm.steer_cfg, lm.engine.num_layers
    if "enrich" in kinds and cfg.gap > L - 1:
        raise SystemExit(f"gap={cfg.gap} too large for {lm.pretrained} with {L} layers "
                         f"(enrich needs gap in 0..{L - 1}); "
                         "pass gap=N in --model_args or leave enrich out of --kinds")
    if not cfg.alphas:
        raise SystemExit("alphas: the strength grid is empty")
    for t in tasks:
        calibration_items(lm, t, md, args.limit)  # tasks, data and splits load (no forward pass yet)
    doc, _ = run_calibration(lm, tasks, out, metadata=md, kinds=kinds, limit=args.limit,
                             batch_size=args.batch_size, progress=_progress(args))
    controls = None
    if args.random_controls > 0 and doc.get("heads") and "layer_guided" in kinds:
        items = []
        for t in tasks:
            items.extend(calibration_items(lm, t, md, args.limit))
        data = collect(lm.engine, items, batch_size=args.batch_size, attention=False, silence=True, heads=False,
                       progress=_progress(args))
        L, H = lm.engine.num_layers, lm.spec.num_heads(lm.model)
        K = int(doc["heads"]["K"])
        alphas = doc["alphas"]
        rand, sets = {}, {}
        for seed in range(args.random_controls):
            hs = random_heads(L, H, K, seed)
            sets[str(seed)] = [list(h) for h in hs]
            rand[str(seed)] = sweep_final_layer(lm.engine, data, layer_weights(hs), alphas)
        controls = {"meta": {**doc["meta"], "analysis": "calibrate-controls"}, "K": K, "alphas": alphas,
                    "random": rand, "random_heads": sets,
                    "specialist": sweep_final_layer(
                        lm.engine, data, layer_weights([tuple(h) for h in doc["heads"]["specialists"]]), alphas)}
        write_json(out / "calibration_controls.json", controls)
    art = json.loads((out / "calibration.json").read_text())
    figures.sweep_figures(art, controls, out / "figures")
    print(f"calibration artifact in {out}")
    return 0


# ---- report --------------------------------------------------------------------------------------------------


def cmd_report(args) -> int:
    from analysis.report import write_report

    path = write_report(args.runs, args.out)
    print(f"report: {path}")
    return 0


# ---- lazily provided commands ----------------------------------------------------------------------------------


def _lazy(cmd: str, argv: Sequence[str]) -> int:
    mod_name, add_name, main_name = LAZY[cmd]
    try:
        mod = importlib.import_module(mod_name)
        add, run = getattr(mod, add_name), getattr(mod, main_name)
    except (ImportError, AttributeError) as e:
        print(f"`python -m analysis {cmd}` needs {mod_name}.{add_name}/{main_name}, which is not available: {e}",
              file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog=f"python -m analysis {cmd}", description=(mod.__doc__ or "").split("\n")[0])
    add(p)
    return int(run(p.parse_args(list(argv))) or 0)


def _demo(argv: Sequence[str]) -> int:
    try:
        mod = importlib.import_module("analysis.demo")
    except ImportError as e:
        print(f"`python -m analysis demo` is not available yet (analysis.demo: {e})", file=sys.stderr)
        return 2
    if hasattr(mod, "add_arguments"):
        p = argparse.ArgumentParser(prog="python -m analysis demo", description=(mod.__doc__ or "").split("\n")[0])
        mod.add_arguments(p)
        return int(mod.main(p.parse_args(list(argv))) or 0)
    return int(mod.main(list(argv)) or 0)


# ---- parser ----------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, split_default: str | None = "all", split: bool = True) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """Build the ``python -m analysis`` argument parser with all subcommands."""
    p = argparse.ArgumentParser(prog="python -m analysis", description=(__doc__ or "").split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Commands: lens, trace, heads, calibrate, critical, report, compare, "
                                       "leaderboard, regress, mmau, demo")
    sub = p.add_subparsers(dest="command", metavar="command")

    s = sub.add_parser("lens", help="logit lens, information scores, critical layers (AudioLens)")
    _common(s)
    s.add_argument("--no_masked", action="store_true", help="skip the audio-masked last-token pass")
    s.add_argument("--alpha", type=float, default=0.2,
                   help="critical-layer threshold alpha (AudioLens Eqs. 3-4), default 0.2")
    s.add_argument("--exclude_track", nargs="*", default=["gender"],
                   help="tracks left out of the extra Table III correlation row (default: gender)")
    s.add_argument("--overwrite", action="store_true", help="discard earlier records in --out")
    s.set_defaults(func=cmd_lens)

    s = sub.add_parser("trace", help="causal tracing (clean / silence-corrupted / patched runs)")
    _common(s)
    s.add_argument("--rows", type=int, default=16, help="patched variants per forward pass (default %(default)s)")
    s.add_argument("--no_layerwise", action="store_true")
    s.add_argument("--no_tokenwise", action="store_true")
    s.add_argument("--no_prefix_cache", action="store_true",
                   help="run patched variants on the full sequence instead of reusing the corrupted prefix")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_trace)

    s = sub.add_parser("heads", help="audio-specialist heads, listening score (calibration -> evaluation split)")
    _common(s, split=False)
    s.add_argument("--K", type=int, default=20, help="number of specialist heads (default %(default)s)")
    s.add_argument("--n_random", type=int, default=10, help="random head sets, seeds 0..n-1 (default %(default)s)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_heads)

    s = sub.add_parser("calibrate", help="calibration artifact (run_calibration) + sweep figure with random controls")
    _common(s, split=False)
    s.add_argument("--kinds", default="enrich,layer_guided,single_layer,head",
                   help="interventions to calibrate (default %(default)s)")
    s.add_argument("--random_controls", type=int, default=5,
                   help="random head sets (seeds 0..n-1) swept like the specialists (default %(default)s; 0 = none)")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("critical", help="critical-layer tables II/III over lens runs")
    s.add_argument("runs", nargs="+", help="lens output folders (or lens_summary.json files)")
    s.add_argument("--out", required=True)
    s.add_argument("--alpha", type=float, default=0.2)
    s.add_argument("--exclude_track", nargs="*", default=["gender"])
    s.set_defaults(func=cmd_critical)

    s = sub.add_parser("report", help="Markdown report of analysis output folders")
    s.add_argument("runs", nargs="+", help="output folders of lens / trace / heads / calibrate / critical")
    s.add_argument("--out", default=None, help="report file (default: <first run>/report.md)")
    s.set_defaults(func=cmd_report)

    for name, h in (("compare", "paired comparison of two lm-eval --log_samples runs (McNemar, bootstrap)"),
                    ("leaderboard", "leaderboard of lm-eval runs"), ("regress", "regression gate between two runs"),
                    ("mmau", "MMAU breakdown by domain, difficulty, category, sub-category (from samples)"),
                    ("demo", "end-to-end demo")):
        sub.add_parser(name, help=h, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m analysis``; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LAZY:
        return _lazy(argv[0], argv[1:])
    if argv and argv[0] == "demo":
        return _demo(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
