"""``python -m analysis critical``: critical-layer Tables II/III over several lens runs (e.g. several models).

Outputs: ``critical_tables.json``, ``critical_rows.csv``, ``critical_table_ii.csv``, ``critical_table_iii.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from analysis.commands.common import Subparsers
from analysis.records import write_csv, write_json

__all__ = ["register", "run"]


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``critical`` command to ``sub``."""
    s = sub.add_parser("critical", help="critical-layer tables II/III over lens runs")
    s.add_argument("runs", nargs="+", help="lens output folders (or lens_summary.json files)")
    s.add_argument("--out", required=True)
    s.add_argument("--alpha", type=float, default=0.2)
    s.add_argument("--exclude_track", nargs="*", default=["gender"])
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Recompute critical layers from the lens summaries and write Tables II/III; return the exit code."""
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
