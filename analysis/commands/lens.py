"""``python -m analysis lens``: logit lens, information scores per layer/position, critical layers (AudioLens).

Outputs: ``lens_records.jsonl``, ``lens_summary.json``, ``lens_info.csv``, ``critical.csv``,
``figures/lens_{layers,correct_wrong,positions}`` (see :mod:`analysis.runner`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

from analysis.commands.common import (
    Subparsers,
    add_common_arguments,
    announce,
    by_task,
    chunks,
    item_fields,
    item_golds,
    item_key,
    progress,
    start_run,
)
from analysis.records import write_csv, write_json

__all__ = ["lens_summary", "register", "run", "write_lens_outputs"]


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``lens`` command to ``sub``."""
    s = sub.add_parser("lens", help="logit lens, information scores, critical layers (AudioLens)")
    add_common_arguments(s)
    s.add_argument("--no_masked", action="store_true", help="skip the audio-masked last-token pass")
    s.add_argument("--alpha", type=float, default=0.2,
                   help="critical-layer threshold alpha (AudioLens Eqs. 3-4), default 0.2")
    s.add_argument("--exclude_track", nargs="*", default=["gender"],
                   help="tracks left out of the extra Table III correlation row (default: gender)")
    s.add_argument("--overwrite", action="store_true", help="discard earlier records in --out")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Run the logit lens over the items (resumable), then write the summaries; return the exit code."""
    import numpy as np
    from tqdm import tqdm

    from analysis import lens

    r = start_run(args, "lens", masked=not args.no_masked, batch_size=args.batch_size)
    items, store, out = r.items[args.split], r.store, r.out
    keys = [item_key(it) for it in items]
    announce(args, "lens", items, store, out)
    bar = tqdm(total=len(items), desc="lens", unit="item", disable=not progress(args))
    bar.update(sum(store.done(k) for k in keys))
    for chunk in chunks(items, args.batch_size):
        ck = [item_key(it) for it in chunk]
        if all(store.done(k) for k in ck):
            continue
        bar.set_postfix_str(chunk[0].meta["task"], refresh=True)
        res = lens.lens_batch(r.lm.engine, chunk, masked=not args.no_masked)
        for it, k, lr in zip(chunk, ck, res):
            if store.done(k):
                continue
            lp_last = lr.logp["last"][-1]
            store.add({"key": k, **item_fields(it), "choice_ids": lr.choice_ids, "tokens": lr.tokens,
                       "pred": int(np.argmax(lp_last)), "correct": int(np.argmax(lp_last)) in item_golds(it),
                       "logp": {name: arr.tolist() for name, arr in lr.logp.items()}})
            bar.update(1)
    bar.close()
    summary = lens_summary(store.ordered(keys), r.meta(), alpha=args.alpha, exclude_tracks=args.exclude_track)
    write_lens_outputs(summary, out)
    print(f"lens: {len(keys)} items, summary in {out / 'lens_summary.json'}")
    return 0


def lens_summary(recs: Sequence[dict[str, Any]], meta: dict[str, Any], *, alpha: float = 0.2,
                 exclude_tracks: Sequence[str] = ()) -> dict[str, Any]:
    """Per task: the lens table (accuracy, I^l per position, correct / incorrect) and critical layers; plus the
    critical-layer rows and Tables II/III."""
    import numpy as np

    from analysis import critical, lens

    tasks: dict[str, Any] = {}
    rows: list[critical.CriticalRow] = []
    for task, rs in by_task(recs).items():
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
    """Write ``lens_summary.json``, ``lens_info.csv``, ``critical.csv`` and the lens figures into ``out``."""
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
