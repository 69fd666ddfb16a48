"""``python -m analysis report``: Markdown report of analysis output folders (:mod:`analysis.report`)."""

from __future__ import annotations

import argparse

from analysis.commands.common import Subparsers

__all__ = ["register", "run"]


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``report`` command to ``sub``."""
    s = sub.add_parser("report", help="Markdown report of analysis output folders")
    s.add_argument("runs", nargs="+", help="output folders of lens / trace / heads / calibrate / critical")
    s.add_argument("--out", default=None, help="report file (default: <first run>/report.md)")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Write the report; return the exit code."""
    from analysis.report import write_report

    path = write_report(args.runs, args.out)
    print(f"report: {path}")
    return 0
