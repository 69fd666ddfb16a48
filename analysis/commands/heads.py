"""``python -m analysis heads``: audio-specialist heads, listening score AUC vs random heads, flip test.

Outputs: ``heads_records.jsonl``, ``heads_summary.json``, ``head_corr.csv``, ``heads_scores.csv``,
``figures/heads_corr`` (see :mod:`analysis.runner`).
"""

from __future__ import annotations

import argparse
from typing import Any

from analysis.commands.common import (
    Subparsers,
    add_common_arguments,
    announce,
    chunks,
    item_fields,
    item_key,
    progress,
    start_run,
)
from analysis.records import write_csv, write_json

__all__ = ["register", "run"]

SPLITS = ("calibration", "evaluation")


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``heads`` command to ``sub``."""
    s = sub.add_parser("heads", help="audio-specialist heads, listening score (calibration -> evaluation split)")
    add_common_arguments(s, split=False)
    s.add_argument("--K", type=int, default=20, help="number of specialist heads (default %(default)s)")
    s.add_argument("--n_random", type=int, default=10, help="random head sets, seeds 0..n-1 (default %(default)s)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Collect audio attention mass on both splits (resumable), find the specialists on the calibration split and
    score the evaluation split; write the summaries; return the exit code."""
    from tqdm import tqdm

    from analysis import figures, heads
    from interventions.calibrate import collect

    r = start_run(args, "heads", splits=SPLITS, batch_size=args.batch_size)
    store, out = r.store, r.out
    split_recs: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        items = r.items[split]
        keys = [item_key(it, f"{split}|") for it in items]
        announce(args, f"heads ({split} split)", items, store, out, keys)
        bar = tqdm(total=len(items), desc=f"heads ({split})", unit="item", disable=not progress(args))
        bar.update(sum(store.done(k) for k in keys))
        for chunk in chunks(list(zip(items, keys)), args.batch_size):
            if all(store.done(k) for _, k in chunk):
                continue
            its = [it for it, _ in chunk]
            bar.set_postfix_str(its[0].meta["task"], refresh=True)
            data = collect(r.lm.engine, its, batch_size=len(its), attention=True, silence=True, heads=False)
            for (it, k), rec in zip(chunk, heads.records_from_collect(data, its)):
                if not store.done(k):
                    store.add({"key": k, "split": split, **item_fields(it), **rec})
                    bar.update(1)
        bar.close()
        split_recs[split] = store.ordered(keys)
    sm = heads.heads_summary(split_recs["calibration"], split_recs["evaluation"], K=args.K, n_random=args.n_random)
    scores = sm.pop("evaluation_scores", [])
    summary = {"meta": r.meta(K=args.K, n_random=args.n_random, split="calibration+evaluation"), **sm}
    write_json(out / "heads_summary.json", summary)
    rank = {(s["layer"], s["head"]): i + 1 for i, s in enumerate(sm["specialists"])}
    rows = [{"layer": l + 1, "head": h, "r": sm["r"][l][h], "mean_mass": sm["mean_mass"][l][h],
             "specialist_rank": rank.get((l + 1, h))}
            for l in range(sm["num_layers"]) for h in range(sm["num_heads"])]
    write_csv(out / "head_corr.csv", rows, ["layer", "head", "r", "mean_mass", "specialist_rank"])
    ev = split_recs["evaluation"]
    write_csv(out / "heads_scores.csv", [{**rec, "score": s} for rec, s in zip(ev, scores)],
              ["task", "doc_id", "clip_id", "gold", "pred", "pred_silence", "correct", "flip", "score"])
    figures.heads_figures(summary, out / "figures")
    e = sm.get("evaluation", {})
    print(f"heads: K={sm['K']} AUC={e.get('auc')} random={e.get('random_auc', {}).get('mean')} "
          f"flip p={e.get('flip_test', {}).get('p_two_sided')}; summary in {out / 'heads_summary.json'}")
    return 0
