"""Markdown tables through ``pytablewriter`` (the writer lm-eval prints its own results tables with).

Every cell is written as the text it is given (no number re-formatting: callers format their numbers, e.g.
``analysis.report._fmt``); ``|`` inside a cell is escaped; ``None`` becomes an empty cell.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` under ``header`` (ends with a newline)."""
    from pytablewriter import MarkdownTableWriter
    from pytablewriter.typehint import String

    matrix = [["" if v is None else str(v) for v in r] for r in rows]
    writer = MarkdownTableWriter(headers=list(header), value_matrix=matrix, type_hints=[String] * len(header),
                                 margin=1)
    return writer.dumps()
