"""analysis.report: the Markdown report of hand-made analysis summaries holds the numbers computed here.

The summaries are written by the test with known values; the derived numbers (peak layer, peak recovery rate,
last-layer RR, segment maxima, sweep columns merged over strengths) are computed here by hand and compared with
the report's table cells, parsed by header so that the table layout (padding, alignment) is free to change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.report import build_report, find_outputs, write_report

NO_VALUE = "–"


def _tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``text`` as a list of {header: cell} rows."""
    tables: list[list[dict[str, str]]] = []
    block: list[list[str]] = []
    for line in text.splitlines() + [""]:
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(set(c) <= set(":- ") and c for c in cells):  # skip the |---|---| separator
                block.append(cells)
        elif block:
            tables.append([dict(zip(block[0], r)) for r in block[1:]])
            block = []
    return tables


def _row(text: str, column: str, first: str, table_has: str | None = None) -> dict[str, str]:
    """The row whose cell under ``column`` is ``first`` (in the tables that have a ``table_has`` column)."""
    hits = [r for t in _tables(text) for r in t if r.get(column) == first and (table_has is None or table_has in r)]
    assert len(hits) == 1, (column, first, hits)
    return hits[0]


def _num(cell: str) -> float | None:
    return None if cell == NO_VALUE else float(cell)


def _eq(cell: str, want: float | None) -> None:
    got = _num(cell)
    if want is None:
        assert got is None, cell
    else:
        assert got is not None and abs(got - want) < 5e-4, (cell, want)


def _dump(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


TRACE = {"meta": {"model": "tiny"}, "tasks": {
    "demo_gender": {"n": 6, "n_included": 4,
                    "exclusions": {"clean_wrong": 1, "corrupted_right": 1, "p_clean_le_p_corrupted": 0},
                    "layer": {"mean": [0.125, 0.7, None, 0.45]},
                    "segments": {"audio": {"mean": [0.2, None, 0.55, 0.1], "n": [4, 3, 4, 2]},
                                 "question": {"mean": [None, None, None, None], "n": []}}},
    "demo_animal": {"n": 3, "n_included": 0,
                    "exclusions": {"clean_wrong": 3, "corrupted_right": 0, "p_clean_le_p_corrupted": 0},
                    "layer": {"mean": []}}}}

CALIBRATION = {"meta": {"seed": 0}, "n_docs": 12, "accuracy": 0.5, "num_layers": 4, "num_heads": 4,
               "enrich": {"source_layer": 1, "gap": 2, "lam": 0.5, "sweep": {"0.0": 0.5, "1.0": 0.75}},
               "heads": {"K": 2, "layer_weights": {"2": 0.5, "3": 0.5}},
               "layer_guided": {"alpha": 2.0, "sweep": {"0.0": 0.5, "2.0": 0.8}}}

HEADS = {"meta": {}, "K": 2, "calibration": {"n": 10, "accuracy": 0.6},
         "specialists": [{"layer": 3, "head": 1, "r": 0.61, "p": 0.0004, "mean_mass": 0.2},
                         {"layer": 2, "head": 0, "r": -0.25, "p": 0.5, "mean_mass": 0.05}]}


def test_trace_table_numbers_equal_hand_computed(tmp_path: Path) -> None:
    run = tmp_path / "trace"
    _dump(run / "trace_summary.json", TRACE)
    text = build_report([run], tmp_path / "report.md")
    g = _row(text, "task", "demo_gender", "peak layer")
    # layer means [0.125, 0.7, None, 0.45]: peak at layer 2 (1-based), value 0.7; last layer 0.45
    for col, want in (("n", 6), ("included", 4), ("clean wrong", 1), ("corrupted right", 1), ("peak layer", 2),
                      ("peak RR", 0.7), ("RR last layer", 0.45)):
        _eq(g[col], want)
    a = _row(text, "task", "demo_animal", "peak layer")
    for col in ("peak layer", "peak RR", "RR last layer"):  # no layer values: no number, not 0 or NaN
        _eq(a[col], None)
    seg = _row(text, "segment", "audio")
    # segment means [0.2, None, 0.55, 0.1]: max 0.55 at layer 3; items = max n = 4
    _eq(seg["max RR"], 0.55)
    _eq(seg["at layer"], 3)
    _eq(seg["items"], 4)
    q = _row(text, "segment", "question")
    _eq(q["max RR"], None)
    assert "nan" not in text.lower()


def test_calibration_sweeps_are_merged_over_strengths(tmp_path: Path) -> None:
    run = tmp_path / "cal"
    _dump(run / "calibration.json", CALIBRATION)
    _dump(run / "calibration_controls.json", {"random": {"7": {"0.0": 0.5, "4.0": 0.25}}})
    text = build_report([run], tmp_path / "report.md")
    _eq(_row(text, "intervention", "enrich")["strength"], 0.5)
    _eq(_row(text, "intervention", "layer_guided")["strength"], 2.0)
    # union of strengths {0, 1, 2, 4}; a sweep without a strength has no value there
    want = {"enrich": [0.5, 0.75, None, None], "layer_guided": [0.5, None, 0.8, None],
            "random heads (seed 7)": [0.5, None, None, 0.25]}
    for name, values in want.items():
        row = _row(text, "sweep", name)
        assert [float(h) for h in list(row)[1:]] == [0.0, 1.0, 2.0, 4.0]  # strength columns in order
        for cell, v in zip(list(row.values())[1:], values):
            _eq(cell, v)


def test_heads_ranks_and_p_values(tmp_path: Path) -> None:
    run = tmp_path / "heads"
    _dump(run / "heads_summary.json", HEADS)
    text = build_report([run], tmp_path / "report.md")
    first, second = _row(text, "rank", "1"), _row(text, "rank", "2")
    assert (first["layer"], first["head"], second["layer"], second["head"]) == ("3", "1", "2", "0")
    _eq(first["r"], 0.61)
    _eq(second["r"], -0.25)
    assert first["p"] == "<0.001"  # p below 0.001 in the one p-value format
    _eq(second["p"], 0.5)


def test_find_outputs_and_write_report_default_path(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    trace = _dump(runs / "a" / "trace_summary.json", TRACE)
    cal = _dump(runs / "b" / "calibration.json", CALIBRATION)
    _dump(runs / "b" / "records.json", {"not": "a summary"})
    found = find_outputs([runs])
    assert found["trace"] == [trace] and found["calibration"] == [cal]
    assert found["lens"] == [] and found["heads"] == [] and found["critical"] == []
    out = write_report([runs / "a", runs / "b"])
    assert out == runs / "a" / "report.md"  # default: report.md in the first run folder
    text = out.read_text()
    assert text == build_report([runs / "a", runs / "b"], out) + "\n"
    _eq(_row(text, "task", "demo_gender", "peak layer")["peak layer"], 2)
    _eq(list(_row(text, "sweep", "enrich").values())[2], 0.75)  # strength 1
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left
