"""Leaderboard: one table of accuracies (rows = model x intervention configuration, columns = tasks/groups).

Usage::

    python -m analysis leaderboard RESULTS... --out DIR [--metric acc] [--alpha 0.05]

``RESULTS`` are lm-eval ``--output_path`` folders (written with ``--log_samples``), model subfolders or results
files. Writes ``DIR/leaderboard.md``, ``DIR/leaderboard.csv`` and a self-contained ``DIR/leaderboard.html``
(inline CSS/JS, click a header to sort; no network).

Columns
    * SAKURA tracks ``sakura_{gender,language,emotion,animal}<suffix>`` (suffix e.g. ``""``, ``_p1``, ``_single``,
      ``_multi``) followed by ``sakura_avg<suffix>``: the unweighted mean of the tracks present (SAKURA reports
      per-track accuracy and their mean).
    * MMAU domains ``mmau_{sound,music,speech}<suffix>`` followed by ``mmau_avg<suffix>``: doc-weighted average
      (= accuracy pooled over all MMAU questions, as MMAU reports it).
    * Any other task, alphabetically.

Cells
    Accuracy with a 95% Wilson interval (for ``sakura_avg`` with unequal track sizes: a normal interval from the
    summed per-track binomial variances). For every steered row (``steer`` set and not none) the difference from
    the same model's unsteered row (same ``pretrained``, ``steer`` none/absent) and the exact McNemar p-value on
    the paired documents (groups: pooled over their documents), Holm-corrected over all comparisons in the table.

Pairing: differences and McNemar tests use the documents both runs scored (matched by the document's own id);
``main`` prints how many documents were paired. Where a task's doc set differs from the baseline's (e.g. an
automatically calibrated run scores only the evaluation split) Δ and the test are computed on the paired docs
and a flag says so.

Flags (``flags`` column and section, never silently dropped): steered rows without an unsteered baseline,
several candidate baselines, tasks whose doc set differs from the baseline's (Δ and McNemar on the paired docs),
tasks the baseline lacks, groups averaged over an incomplete set of tracks, missing metric, duplicate rows.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_write_text
from .results_io import ResultsError, Run, pair_docs, read_many
from .stats import holm, mcnemar_exact, wilson_ci
from .tables import markdown_table

__all__ = ["Cell", "Column", "Leaderboard", "Row", "add_arguments", "build_leaderboard", "main", "register",
           "write_leaderboard"]

_FAMILIES: tuple[tuple[str, re.Pattern[str], tuple[str, ...], str], ...] = (
    ("sakura", re.compile(r"^sakura_(gender|language|emotion|animal)((?:_\w+)?)$"),
     ("gender", "language", "emotion", "animal"), "mean"),
    ("mmau", re.compile(r"^mmau_(sound|music|speech)((?:_\w+)?)$"), ("sound", "music", "speech"), "pooled"),
)


@dataclass(frozen=True)
class Column:
    """A table column: a single task (``kind="task"``) or a group average over ``members``."""

    name: str
    members: tuple[str, ...]
    kind: str  # "task" | "mean" (unweighted over tasks) | "pooled" (doc-weighted)
    absent: tuple[str, ...] = ()
    """Tasks of the group's full definition (4 SAKURA tracks, 3 MMAU domains) that no run evaluated."""


@dataclass
class Cell:
    """One table cell. ``delta``/``pvalue`` are set only for steered rows with a usable baseline."""

    acc: float
    low: float
    high: float
    n: int
    delta: float | None = None
    b01: int | None = None
    b10: int | None = None
    pvalue: float | None = None
    p_holm: float | None = None
    note: str = ""
    n_paired: int | None = None
    """Docs paired by id with the baseline (``delta`` and the McNemar test are computed on them)."""


@dataclass
class Row:
    """One leaderboard row: a run, its unsteered baseline, its cells and flags."""
    run: Run
    baseline: Run | None
    cells: dict[str, Cell] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


@dataclass
class Leaderboard:
    """A leaderboard table: metric, columns, rows and the significance level."""
    metric: str
    columns: list[Column]
    rows: list[Row]
    alpha: float = 0.05

    @property
    def flags(self) -> list[str]:
        """Row flags prefixed with the row label, then table-level notes on incomplete groups."""
        out = [f"{r.run.label}: {f}" for r in self.rows for f in r.flags]
        out += [f"{c.name}: averages {len(c.members)} tasks; no run has {', '.join(c.absent)}"
                for c in self.columns if c.absent]
        return out


# ---------------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------------


def make_columns(task_names: Sequence[str]) -> list[Column]:
    """Order tasks into columns, inserting group averages after each SAKURA/MMAU family."""
    names = set(task_names)
    columns: list[Column] = []
    used: set[str] = set()
    for prefix, pattern, order, kind in _FAMILIES:
        by_suffix: dict[str, list[str]] = {}
        for t in names:
            m = pattern.match(t)
            if m:
                by_suffix.setdefault(m.group(2), []).append(t)
        for suffix in sorted(by_suffix, key=lambda s: (s != "", s)):
            full = [f"{prefix}_{part}{suffix}" for part in order]
            members = [t for t in full if t in names]
            columns.extend(Column(t, (t,), "task") for t in members)
            if len(members) >= 2:  # an "average" of one task would only repeat it
                absent = tuple(t for t in full if t not in names)
                columns.append(Column(f"{prefix}_avg{suffix}", tuple(members), kind, absent))
            used.update(members)
    columns.extend(Column(t, (t,), "task") for t in sorted(names - used))
    return columns


def _stats(run: Run, col: Column, metric: str, alpha: float = 0.05) -> tuple[Cell, list[str]] | None:
    """Accuracy + (1 - alpha) interval of ``run`` in ``col`` and flags; None when no member task has the metric."""
    present = [t for t in col.members if t in run.tasks and run.tasks[t].has(metric)]
    if not present:
        return None
    ks = [float(run.tasks[t].values(metric).sum()) for t in present]
    ns = [run.tasks[t].n for t in present]
    notes: list[str] = []
    if col.kind == "mean":
        accs = [k / n for k, n in zip(ks, ns)]
        acc = float(np.mean(accs))
        if len(set(ns)) == 1:
            low, high = wilson_ci(int(round(sum(ks))), sum(ns), alpha)
        else:
            from scipy.stats import norm

            z = float(norm.ppf(1.0 - alpha / 2.0))  # 1.959964 for alpha = 0.05
            se = math.sqrt(sum(a * (1 - a) / n for a, n in zip(accs, ns))) / len(accs)
            low, high = max(0.0, acc - z * se), min(1.0, acc + z * se)
    else:
        acc = sum(ks) / sum(ns)
        low, high = wilson_ci(int(round(sum(ks))), sum(ns), alpha)
    missing = [t for t in col.members if t not in present]
    if col.kind != "task" and missing:
        notes.append(f"{col.name} averages only {len(present)}/{len(col.members)} of the table's tasks "
                     f"(missing {', '.join(missing)}); not comparable with other rows")
    return Cell(acc, low, high, sum(ns), note="incomplete" if missing else ""), notes


def _compare(run: Run, base: Run, col: Column, cell: Cell, base_cell: Cell, metric: str) -> list[str]:
    """Fill ``cell.delta`` and, when the documents pair up, the McNemar fields; return flags."""
    cell.delta = cell.acc - base_cell.acc
    present = [t for t in col.members if t in run.tasks and run.tasks[t].has(metric)]
    base_present = [t for t in col.members if t in base.tasks and base.tasks[t].has(metric)]
    if present != base_present:
        cell.note = "tasks differ from baseline"
        return [f"{col.name}: task set differs from baseline ({present} vs {base_present}); no McNemar"]
    a_parts, b_parts, flags = [], [], []
    for t in present:
        pairing = pair_docs(base.tasks[t], run.tasks[t], metric)
        if not pairing.doc_ids:
            cell.note = "no common docs with baseline"
            return [f"{t}: no doc in common with the baseline ({pairing.describe_mismatch()}); no McNemar"]
        if not pairing.same_docs:
            cell.note = "paired docs only"
            if col.kind == "task":
                flags.append(f"{t}: doc set differs from baseline ({pairing.describe_mismatch()}); Δ and McNemar "
                             f"on the {len(pairing.doc_ids)} paired docs")
        a_parts.append(pairing.a)
        b_parts.append(pairing.b)
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    cell.n_paired = int(a.size)
    if cell.note == "paired docs only":  # Δ on the paired docs, not on two different doc sets
        cell.delta = float(b.mean() - a.mean()) if col.kind != "mean" else float(
            np.mean([bp.mean() for bp in b_parts]) - np.mean([ap.mean() for ap in a_parts]))
    try:
        res = mcnemar_exact(a, b)
    except ValueError:
        cell.note = "metric not 0/1"
        return flags + [f"{col.name}: metric {metric!r} is not 0/1 per document; no McNemar"]
    cell.b01, cell.b10, cell.pvalue = int(res["b01"]), int(res["b10"]), float(res["pvalue"])
    return flags


def _pick_baselines(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        if not r.steered:
            out.setdefault(r.model, []).append(r)
    for cands in out.values():
        cands.sort(key=lambda r: (len(r.config), r.config_str, str(r.source)))
    return out


def build_leaderboard(runs: Sequence[Run], metric: str = "acc", alpha: float = 0.05) -> Leaderboard:
    """Compute all cells, comparisons, Holm-adjusted p-values and flags for ``runs``."""
    runs = sorted(runs, key=lambda r: (r.model, r.steered, r.config_str, str(r.source)))
    columns = make_columns(sorted({t for r in runs for t in r.tasks}))
    baselines = _pick_baselines(runs)
    seen: dict[tuple, Run] = {}
    rows: list[Row] = []
    for run in runs:
        row = Row(run, None)
        if run.key in seen:
            row.flags.append(f"duplicate configuration (also read from {seen[run.key].source})")
        seen.setdefault(run.key, run)
        for t, tr in run.tasks.items():
            if not tr.has(metric):
                row.flags.append(f"{t}: no per-sample metric {metric!r}")
        if run.steered:
            cands = baselines.get(run.model, [])
            if not cands:
                row.flags.append(f"no unsteered baseline for model {run.model}; no differences computed")
            else:
                row.baseline = cands[0]
                if len(cands) > 1:
                    row.flags.append(
                        f"{len(cands)} unsteered rows for {run.model}; compared with "
                        f"[{cands[0].config_str or 'no intervention'}] from {cands[0].source}"
                    )
        for col in columns:
            got = _stats(run, col, metric, alpha)
            if got is None:
                continue
            cell, notes = got
            row.flags.extend(notes)
            row.cells[col.name] = cell
            if row.baseline is not None:
                base_got = _stats(row.baseline, col, metric, alpha)
                if base_got is None:
                    cell.note = "baseline lacks task"
                    row.flags.append(f"{col.name}: baseline has no results; no difference computed")
                else:
                    row.flags.extend(_compare(run, row.baseline, col, cell, base_got[0], metric))
        rows.append(row)
    cells = [c for r in rows for c in r.cells.values() if c.pvalue is not None]
    for c, adj in zip(cells, holm([c.pvalue for c in cells])):  # type: ignore[misc]
        c.p_holm = adj
    return Leaderboard(metric, columns, rows, alpha)


# ---------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _p(x: float | None) -> str:
    if x is None or math.isnan(x):
        return ""
    return f"{x:.2g}" if x >= 0.001 else f"{x:.1e}"


def _cell_lines(c: Cell, alpha: float) -> tuple[str, str]:
    main = f"{_pct(c.acc)} [{_pct(c.low)}, {_pct(c.high)}]"
    if c.delta is None:
        return main, ""
    sig = "*" if c.p_holm is not None and c.p_holm < alpha else ""
    diff = f"Δ {100 * c.delta:+.1f}"
    if c.pvalue is not None:
        diff += f" (p={_p(c.pvalue)}, Holm {_p(c.p_holm)}){sig}"
    elif c.note:
        diff += f" ({c.note})"
    return main, diff


def render_markdown(lb: Leaderboard) -> str:
    head = ["model", "configuration"] + [c.name for c in lb.columns] + ["flags"]
    lines = [
        f"# Leaderboard (metric: `{lb.metric}`)",
        "",
        f"Accuracy % [{100 * (1 - lb.alpha):g}% Wilson CI]; steered rows: Δ vs the same model's unsteered row, "
        "exact McNemar p and "
        f"Holm-adjusted p over all {sum(1 for r in lb.rows for c in r.cells.values() if c.pvalue is not None)} "
        f"comparisons (* = Holm p < {lb.alpha}).",
        "",
    ]
    rows = []
    for r in lb.rows:
        vals = [r.run.model, r.run.config_str or "—"]
        for col in lb.columns:
            c = r.cells.get(col.name)
            if c is None:
                vals.append("")
            else:
                main, diff = _cell_lines(c, lb.alpha)
                vals.append(main + (f"<br>{diff}" if diff else ""))
        vals.append(str(len(r.flags)) if r.flags else "")
        rows.append(vals)
    lines.append(markdown_table(head, rows).rstrip("\n"))
    lines += ["", "## Flags", ""]
    lines += [f"- {f}" for f in lb.flags] or ["- none"]
    lines += ["", "## Sources", ""]
    lines += [f"- {r.run.label}: `{r.run.source}`" for r in lb.rows]
    return "\n".join(lines) + "\n"


def _num(x: float | int | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def render_csv(lb: Leaderboard) -> str:
    fields = ["acc", "ci_low", "ci_high", "n", "delta", "b01", "b10", "p_mcnemar", "p_holm"]
    head = ["model", "configuration", "model_args", "steered", "baseline", "source"]
    head += [f"{c.name}_{f}" if f != "acc" else c.name for c in lb.columns for f in fields] + ["flags"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in lb.rows:
        out = [r.run.model, r.run.config_str, r.run.model_args, str(r.run.steered),
               (r.baseline.config_str or "(no intervention)") if r.baseline else "", str(r.run.source)]
        for col in lb.columns:
            c = r.cells.get(col.name)
            if c is None:
                out += [""] * len(fields)
            else:
                out += [_num(v) for v in (c.acc, c.low, c.high, c.n, c.delta, c.b01, c.b10, c.pvalue, c.p_holm)]
        out.append("; ".join(r.flags))
        w.writerow(out)
    return buf.getvalue()


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 6px;\
text-align:right;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}\
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
td.l{text-align:left}.d{font-size:11px;color:#555}.up{color:#0a6b0a}.down{color:#b00}.sig{font-weight:bold}
.grp{background:#f7f7ff}.fl{color:#b35900;text-align:left;font-size:11px}"""

_JS = """document.querySelectorAll('table.lb th').forEach(function(th,i){th.addEventListener('click',function(){
var tb=th.closest('table').tBodies[0],rows=Array.from(tb.rows),asc=!th.classList.contains('asc');
th.parentNode.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});th.classList.add(asc?'asc':'desc');
rows.sort(function(a,b){var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;var fx=parseFloat(x),fy=parseFloat(y);
if(x===undefined||x==='')return 1;if(y===undefined||y==='')return -1;
var r=(!isNaN(fx)&&!isNaN(fy))?fx-fy:String(x).localeCompare(String(y));return asc?r:-r});
rows.forEach(function(r){tb.appendChild(r)})})});"""


def render_html(lb: Leaderboard) -> str:
    # Written here, not by pytablewriter's HtmlTableWriter or pandas' to_html: the sortable page needs a
    # per-cell sort key (data-v), a tooltip and classes for Δ and significance, which neither writer emits.
    e = html.escape
    head = "".join(
        f'<th title="{e(", ".join(c.members))}"{" class=grp" if c.kind != "task" else ""}>{e(c.name)}</th>'
        for c in lb.columns
    )
    body = []
    for r in lb.rows:
        tds = [f'<td class="l" data-v="{e(r.run.model)}">{e(r.run.model)}</td>',
               f'<td class="l" data-v="{e(r.run.config_str)}">{e(r.run.config_str or "—")}</td>']
        for col in lb.columns:
            c = r.cells.get(col.name)
            if c is None:
                tds.append('<td data-v=""></td>')
                continue
            main, diff = _cell_lines(c, lb.alpha)
            cls = "" if c.delta is None else ("up" if c.delta > 0 else "down" if c.delta < 0 else "")
            if c.p_holm is not None and c.p_holm < lb.alpha:
                cls += " sig"
            tip = f"n={c.n}" + (f", b01={c.b01}, b10={c.b10}" if c.b01 is not None else "")
            tds.append(f'<td data-v="{c.acc:.6f}" title="{e(tip)}">{e(main)}'
                       + (f'<br><span class="d {cls.strip()}">{e(diff)}</span>' if diff else "") + "</td>")
        tds.append(f'<td class="fl" data-v="{len(r.flags)}">{"<br>".join(e(f) for f in r.flags)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    flags = "".join(f"<li>{e(f)}</li>" for f in lb.flags) or "<li>none</li>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Leaderboard ({e(lb.metric)})</title>
<style>{_CSS}</style></head><body>
<h1>Leaderboard <small>(metric: {e(lb.metric)})</small></h1>
<p>Accuracy % [{100 * (1 - lb.alpha):g}% Wilson CI]. Steered rows: &Delta; vs the same model's unsteered row, \
exact McNemar p and
Holm-adjusted p over all comparisons in the table (bold = Holm p &lt; {lb.alpha}). Click a header to sort.</p>
<table class="lb"><thead><tr><th>model</th><th>configuration</th>{head}<th>flags</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<h2>Flags</h2><ul>{flags}</ul>
<script>{_JS}</script>
</body></html>
"""


def write_leaderboard(lb: Leaderboard, out_dir: str | Path) -> list[Path]:
    """Write ``leaderboard.{md,csv,html}`` atomically into ``out_dir``; return their paths."""
    out = Path(out_dir)
    return [
        atomic_write_text(out / "leaderboard.md", render_markdown(lb)),
        atomic_write_text(out / "leaderboard.csv", render_csv(lb)),
        atomic_write_text(out / "leaderboard.html", render_html(lb)),
    ]


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``leaderboard`` command's options to ``parser``."""
    parser.add_argument("results", nargs="+", help="lm-eval --output_path folders (with --log_samples), "
                        "model subfolders or results_*.json files")
    parser.add_argument("--out", required=True, help="folder for leaderboard.md / .csv / .html")
    parser.add_argument("--metric", default="acc", help="per-sample 0/1 metric (default: acc; e.g. acc_first_token)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level for marking cells (Holm)")


def main(args: argparse.Namespace) -> int:
    """Build and write the leaderboard. Exit 0 on success, 2 when an input cannot be read."""
    try:
        runs = read_many(args.results)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lb = build_leaderboard(runs, metric=args.metric, alpha=args.alpha)
    paths = write_leaderboard(lb, args.out)
    print(f"{len(lb.rows)} rows x {len(lb.columns)} columns, {len(lb.flags)} flags (metric {lb.metric})")
    paired = [(r.run.label, name, c.n_paired) for r in lb.rows for name, c in r.cells.items()
              if c.n_paired is not None and not any(name == col.name and col.kind != "task" for col in lb.columns)]
    if paired:
        print(f"compared with the baseline on {sum(n for *_, n in paired)} paired docs over {len(paired)} "
              "task cell(s) (docs paired by id)")
    for f in lb.flags:
        print(f"  flag: {f}")
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    _p_ = argparse.ArgumentParser(prog="python -m analysis.leaderboard", description=(__doc__ or "").split("\n")[0])
    add_arguments(_p_)
    sys.exit(main(_p_.parse_args()))


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``leaderboard`` command of ``python -m analysis`` to ``sub``."""
    s = sub.add_parser("leaderboard", help="leaderboard of lm-eval runs",
                       description=(__doc__ or "").split("\n")[0])
    add_arguments(s)
    s.set_defaults(func=main)
    return s
