"""``python -m analysis trace``: causal tracing (clean / silence-corrupted / patched runs), layer- and token-wise RR.

Outputs: ``trace_records.jsonl``, ``trace_summary.json``, ``trace_layer.csv``, ``trace_segments.csv``,
``trace_items.csv``, ``figures/trace_{rr_layers,tokens_<task>,segments_<task>}`` (see :mod:`analysis.runner`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from analysis.commands.common import (
    Subparsers,
    add_common_arguments,
    by_task,
    item_fields,
    item_key,
    progress,
    start_run,
)
from analysis.records import write_csv, write_json

__all__ = ["register", "run", "write_trace_outputs"]


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``trace`` command to ``sub``."""
    s = sub.add_parser("trace", help="causal tracing (clean / silence-corrupted / patched runs)")
    add_common_arguments(s)
    s.add_argument("--rows", type=int, default=16, help="patched variants per forward pass (default %(default)s)")
    s.add_argument("--no_layerwise", action="store_true")
    s.add_argument("--no_tokenwise", action="store_true")
    s.add_argument("--no_prefix_cache", action="store_true",
                   help="run patched variants on the full sequence instead of reusing the corrupted prefix")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Trace every item (resumable), then write the summaries; return the exit code."""
    from tqdm import tqdm

    from analysis import tracing

    r = start_run(args, "trace", layerwise=not args.no_layerwise, tokenwise=not args.no_tokenwise, rows=args.rows)
    items, store, out = r.items[args.split], r.store, r.out
    keys = [item_key(it) for it in items]
    for it, k in tqdm(list(zip(items, keys)), desc="trace", disable=not progress(args)):
        if store.done(k):
            continue
        rec = tracing.trace_item(r.lm.engine, it, layerwise=not args.no_layerwise, tokenwise=not args.no_tokenwise,
                                 rows=args.rows, prefix_cache=not args.no_prefix_cache)
        store.add({"key": k, **item_fields(it), **rec})
    recs = store.ordered(keys)
    summary = {"meta": r.meta(rows=args.rows),
               "tasks": {t: {"track": rs[0]["track"], "prompt": rs[0]["prompt_format"], **tracing.summarize(rs)}
                         for t, rs in by_task(recs).items()}}
    write_trace_outputs(summary, recs, out)
    print(f"trace: {len(keys)} items, summary in {out / 'trace_summary.json'}")
    return 0


def write_trace_outputs(summary: dict[str, Any], recs: Sequence[dict[str, Any]], out: Path) -> None:
    """Write ``trace_summary.json``, the three trace CSVs and the trace figures into ``out``."""
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
