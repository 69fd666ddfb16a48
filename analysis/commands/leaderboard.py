"""``python -m analysis leaderboard``: the leaderboard of lm-eval runs (options and entry point:
:func:`analysis.leaderboard.add_arguments`, :func:`analysis.leaderboard.main`)."""

from __future__ import annotations

import argparse

from analysis import leaderboard
from analysis.commands.common import Subparsers

__all__ = ["register"]


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``leaderboard`` command to ``sub``."""
    s = sub.add_parser("leaderboard", help="leaderboard of lm-eval runs",
                       description=(leaderboard.__doc__ or "").split("\n")[0])
    leaderboard.add_arguments(s)
    s.set_defaults(func=leaderboard.main)
    return s
