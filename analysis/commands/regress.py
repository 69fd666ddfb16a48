"""``python -m analysis regress`` (regression gate) and ``python -m analysis compare`` (paired comparison) of two
lm-eval runs; options and entry points are :mod:`analysis.regress`'s."""

from __future__ import annotations

import argparse

from analysis import regress
from analysis.commands.common import Subparsers

__all__ = ["register", "register_compare"]


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``regress`` command to ``sub``."""
    s = sub.add_parser("regress", help="regression gate between two runs",
                       description=(regress.__doc__ or "").split("\n")[0])
    regress.add_arguments(s)
    s.set_defaults(func=regress.main)
    return s


def register_compare(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``compare`` command to ``sub``."""
    s = sub.add_parser("compare", help="paired comparison of two lm-eval --log_samples runs (McNemar, bootstrap)",
                       description=(regress.__doc__ or "").split("\n")[0])
    regress.add_compare_arguments(s)
    s.set_defaults(func=regress.compare_main)
    return s
