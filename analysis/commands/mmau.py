"""``python -m analysis mmau``: MMAU accuracy by domain / difficulty / category / sub-category from a
``--log_samples`` run (options and entry point: :mod:`analysis.mmau_breakdown`)."""

from __future__ import annotations

import argparse

from analysis import mmau_breakdown
from analysis.commands.common import Subparsers

__all__ = ["register"]


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``mmau`` command to ``sub``."""
    s = sub.add_parser("mmau", help="MMAU breakdown by domain, difficulty, category, sub-category (from samples)",
                       description=(mmau_breakdown.__doc__ or "").split("\n")[0])
    mmau_breakdown.add_arguments(s)
    s.set_defaults(func=mmau_breakdown.main)
    return s
