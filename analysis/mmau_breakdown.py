"""MMAU test-mini breakdowns of an lm-eval run: accuracy by domain, difficulty, category and sub-category.

Usage::

    python -m analysis mmau RUN [--metric acc] [--json FILE] [--csv FILE]

``RUN`` is an lm-eval ``--output_path`` folder written with ``--log_samples`` that holds ``mmau_sound``,
``mmau_music`` and/or ``mmau_speech``. Every logged document carries its ``difficulty``, ``category`` and
``sub_category``; the breakdown pools the documents of all MMAU domains (as MMAU reports its test-mini numbers),
so the ``all`` row equals the ``mmau_test_mini`` group accuracy (doc-weighted). The metric is per document
(``acc``: summed continuation log-probability; ``acc_first_token``: next-token criterion), with MMAU's
text-match rule already applied (an option whose text is the answer text counts wherever it stands).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
from typing import Any

from .atomic import atomic_write_json, atomic_write_text
from .results_io import ResultsError, iter_jsonl, read_run

__all__ = ["register", "add_arguments", "breakdown", "format_breakdown", "main"]

_DOMAIN = re.compile(r"^mmau_(sound|music|speech)(_\w+)?$")
FACETS = ("domain", "difficulty", "category", "sub_category")


def _rows_of(run, metric: str) -> list[dict[str, Any]]:
    rows = []
    for name, tr in sorted(run.tasks.items()):
        m = _DOMAIN.match(name)
        if not m:
            continue
        for r in iter_jsonl(tr.samples_file):
            if not isinstance(r, dict) or r.get("filter", "none") != "none" or r.get(metric) is None:
                continue
            doc = r.get("doc") or {}
            rows.append({"domain": str(doc.get("task") or m.group(1)),
                         "difficulty": str(doc.get("difficulty") or "?"),
                         "category": str(doc.get("category") or "?"),
                         "sub_category": str(doc.get("sub_category") or "?"),
                         "value": float(r[metric])})
    return rows


def breakdown(run, metric: str = "acc") -> dict[str, Any]:
    """``{"metric", "n", "accuracy", "by": {facet: {value: {"n", "accuracy"}}}}`` over the run's MMAU docs."""
    rows = _rows_of(run, metric)
    if not rows:
        raise ResultsError(f"run {run.source} has no MMAU samples (mmau_sound/music/speech with --log_samples) "
                           f"carrying metric {metric!r}")
    if any(not math.isfinite(r["value"]) for r in rows):
        raise ResultsError(f"run {run.source}: non-finite per-sample {metric!r}; refusing to aggregate")
    out: dict[str, Any] = {"metric": metric, "n": len(rows), "accuracy": sum(r["value"] for r in rows) / len(rows),
                           "by": {}}
    for facet in FACETS:
        groups: dict[str, list[float]] = {}
        for r in rows:
            groups.setdefault(r[facet], []).append(r["value"])
        out["by"][facet] = {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(groups.items())}
    return out


def format_breakdown(b: dict[str, Any]) -> str:
    """Format an MMAU breakdown as a text table."""
    lines = [f"MMAU breakdown (metric {b['metric']}, {b['n']} docs pooled over domains)", "",
             f"{'facet':<13} {'value':<40} {'n':>5} {'acc':>7}",
             f"{'all':<13} {'':<40} {b['n']:>5} {b['accuracy']:>7.4f}"]
    for facet, groups in b["by"].items():
        for k, v in groups.items():
            lines.append(f"{facet:<13} {k[:40]:<40} {v['n']:>5} {v['accuracy']:>7.4f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``mmau`` command's options to ``parser``."""
    parser.add_argument("run", help="lm-eval --output_path folder (with --log_samples) holding MMAU tasks")
    parser.add_argument("--metric", default="acc", help="per-sample metric (default: acc; e.g. acc_first_token)")
    parser.add_argument("--json", metavar="FILE", help="also write the breakdown as JSON (atomically)")
    parser.add_argument("--csv", metavar="FILE", help="also write it as CSV: facet,value,n,accuracy")


def main(args: argparse.Namespace) -> int:
    """Print (and optionally write) the MMAU breakdown of a run; return the exit code."""
    try:
        b = breakdown(read_run(args.run), args.metric)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_breakdown(b))
    if args.json:
        atomic_write_json(args.json, b)
    if args.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["facet", "value", "n", "accuracy"])
        w.writerow(["all", "", b["n"], f"{b['accuracy']:.6f}"])
        w.writerows([facet, k, v["n"], f"{v['accuracy']:.6f}"] for facet, groups in b["by"].items()
                    for k, v in groups.items())
        atomic_write_text(args.csv, buf.getvalue())
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``mmau`` command of ``python -m analysis`` to ``sub``."""
    s = sub.add_parser("mmau", help="MMAU breakdown by domain, difficulty, category, sub-category (from samples)",
                       description=(__doc__ or "").split("\n")[0])
    add_arguments(s)
    s.set_defaults(func=main)
    return s
