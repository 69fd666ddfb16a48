"""Markdown report of analysis output folders (lens / trace / heads / calibrate / critical).

``write_report(runs, out)`` finds every summary file under the given folders (``lens_summary.json``,
``trace_summary.json``, ``heads_summary.json``, ``calibration.json`` (+ ``calibration_controls.json``),
``critical_tables.json``), renders their tables, links their figures and lists their CSV/JSON files, with
paths relative to the report.  With several trace runs (e.g. one per model) it also draws one combined
RR-vs-layer figure next to the report.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from .tables import markdown_table

__all__ = ["build_report", "write_report", "find_outputs"]

KINDS = {"lens_summary.json": "lens", "trace_summary.json": "trace", "heads_summary.json": "heads",
         "calibration.json": "calibration", "critical_tables.json": "critical"}


def find_outputs(runs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Find the analysis output files under ``runs``, grouped by kind."""
    found: dict[str, list[Path]] = {k: [] for k in KINDS.values()}
    for r in runs:
        root = Path(r)
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        for f in files:
            kind = KINDS.get(f.name)
            if kind and f not in found[kind]:
                found[kind].append(f)
    return found


NUMBERS_NOTE = ("Numbers: fixed point with 3 decimals (p-values below 0.001 as `<0.001`); "
                "`–` = no value: not defined for that row (no layer reached the critical-layer threshold, "
                "fewer than 3 rows for a correlation, no item left after exclusions, no track excluded) or "
                "not computed.")


def _fmt(v: Any, nd: int = 3, pvalue: bool = False) -> str:
    """One number format for every table: fixed point, ``nd`` decimals (no scientific notation)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "–"
        if pvalue and 0 < v < 10 ** -nd:
            return f"<{10 ** -nd:.{nd}f}"
        out = f"{v:.{nd}f}"
        return out[1:] if out.startswith("-") and float(out) == 0 else out  # no "-0.000"
    return str(v)


def _is_p(col: str) -> bool:
    return col == "p" or col.startswith("p ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    text = markdown_table(header, [[_fmt(v, pvalue=_is_p(h)) for h, v in zip(header, r)] for r in rows])
    return text.rstrip("\n").split("\n") + [""]


def _rel(p: Path, base: Path) -> str:
    return os.path.relpath(p, base).replace(os.sep, "/")


def _figures(folder: Path, base: Path, prefix: str) -> list[str]:
    out = []
    for png in sorted((folder / "figures").glob(f"{prefix}*.png")) if (folder / "figures").exists() else []:
        out.append(f"![{png.stem}]({_rel(png, base)})")
        out.append("")
    return out


def _meta_line(meta: dict[str, Any]) -> str:
    keys = ("model", "revision", "dtype", "tasks", "split", "split_seed", "seed", "limit", "package_version")
    return "; ".join(f"{k}: `{meta.get(k)}`" for k in keys if k in meta)


def _lens(f: Path, base: Path) -> list[str]:
    sm = json.loads(f.read_text())
    lines = [f"### Logit lens — `{_rel(f.parent, base)}`", "", _meta_line(sm.get("meta", {})), ""]
    rows = []
    for task, t in sm["tasks"].items():
        cl = t.get("critical_layer", {})
        last = t["info"].get("last") or [None]
        rows.append([task, t["track"], t["prompt"], t["n"], t["n_labels"], t["accuracy"], last[-1],
                     cl.get("last"), cl.get("penultimate"), cl.get("masked_last")])
    lines += _table(["task", "track", "prompt", "n", "labels", "accuracy", "I^L (last)", "critical (last)",
                     "critical (penultimate)", "critical (masked last)"], rows)
    t3 = sm.get("critical", {}).get("table_iii", {})
    rows = []
    for pos, entries in t3.items():
        for e in entries:
            rows.append([e["model"], pos, ", ".join(e.get("exclude_tracks") or []) or "–", e["n"], e["r"], e["pvalue"]])
    if rows:
        lines += ["Pearson correlation between critical layer and accuracy (Table III):", ""]
        lines += _table(["model", "position", "excluding", "rows", "r", "p"], rows)
    return lines + _figures(f.parent, base, "lens_")


def _trace(f: Path, base: Path) -> list[str]:
    sm = json.loads(f.read_text())
    lines = [f"### Causal tracing — `{_rel(f.parent, base)}`", "", _meta_line(sm.get("meta", {})), ""]
    rows = []
    for task, t in sm["tasks"].items():
        ex = t["exclusions"]
        lw = (t.get("layer") or {}).get("mean") or []
        vals = [v for v in lw if v is not None]
        peak = (lw.index(max(vals)) + 1) if vals else None
        rows.append([task, t["n"], t["n_included"], ex["clean_wrong"], ex["corrupted_right"],
                     ex["p_clean_le_p_corrupted"], peak, max(vals) if vals else None, lw[-1] if lw else None])
    lines += _table(["task", "n", "included", "clean wrong", "corrupted right", "P_clean <= P_corr",
                     "peak layer", "peak RR", "RR last layer"], rows)
    seg_rows = []
    for task, t in sm["tasks"].items():
        for seg, s in (t.get("segments") or {}).items():
            m = [v for v in s["mean"] if v is not None]
            seg_rows.append([task, seg, max(s["n"]) if s["n"] else 0, max(m) if m else None,
                             (s["mean"].index(max(m)) + 1) if m else None])
    if seg_rows:
        lines += ["Token-wise tracing by segment (mean RR over the segment's positions):", ""]
        lines += _table(["task", "segment", "items", "max RR", "at layer"], seg_rows)
    return lines + _figures(f.parent, base, "trace_")


def _heads(f: Path, base: Path) -> list[str]:
    sm = json.loads(f.read_text())
    lines = [f"### Audio-specialist heads — `{_rel(f.parent, base)}`", "", _meta_line(sm.get("meta", {})), ""]
    cal = sm.get("calibration", {})
    lines += [f"Calibration split: n = {cal.get('n')}, accuracy = {_fmt(cal.get('accuracy'))}; K = {sm.get('K')}.", ""]
    lines += _table(["rank", "layer", "head", "r", "p", "mean mass"],
                    [[i + 1, s["layer"], s["head"], s["r"], s.get("p"), s.get("mean_mass")]
                     for i, s in enumerate(sm.get("specialists", []))])
    ev = sm.get("evaluation")
    if ev:
        ra = ev.get("random_auc", {})
        ft = ev.get("flip_test", {})
        lines += _table(["evaluation n", "accuracy", "AUC (specialists)", "AUC random (mean)", "AUC random (std)",
                         "flips", "U (flipped)", "p two-sided", "p greater"],
                        [[ev["n"], ev["accuracy"], ev["auc"], ra.get("mean"), ra.get("std"), ev["n_flip"],
                          ft.get("U"), ft.get("p_two_sided"), ft.get("p_greater")]])
    return lines + _figures(f.parent, base, "heads_")


def _calibration(f: Path, base: Path) -> list[str]:
    art = json.loads(f.read_text())
    from audio_tasks.reference import model_name

    model = art.get("meta", {}).get("model_id")
    lines = [f"### Calibration — `{_rel(f.parent, base)}`", "",
             _meta_line({**art.get("meta", {}), "model": model_name(model) if model else model}), ""]
    rows = []
    if art.get("enrich"):
        e = art["enrich"]
        rows.append(["enrich", f"source layer {e['source_layer']}, gap {e['gap']}", e["lam"]])
    if art.get("layer_guided"):
        rows.append(["layer_guided", f"K = {art['heads']['K']}, layers {list(art['heads']['layer_weights'])}",
                     art["layer_guided"]["alpha"]])
    if art.get("single_layer"):
        rows.append(["single_layer", f"layer {art['single_layer']['layer']}", art["single_layer"]["alpha"]])
    if art.get("head"):
        rows.append(["head", f"K = {art['heads']['K']}", art["head"]["alpha"]])
    lines += [f"n = {art.get('n_docs')}, accuracy = {_fmt(art.get('accuracy'))}", ""]
    lines += _table(["intervention", "selection", "strength"], rows)
    sweeps = {k: art[k]["sweep"] for k in ("enrich", "layer_guided", "single_layer", "head")
              if (art.get(k) or {}).get("sweep")}
    ctrl_f = f.parent / "calibration_controls.json"
    if ctrl_f.exists():
        ctrl = json.loads(ctrl_f.read_text())
        for seed, sw in ctrl.get("random", {}).items():
            sweeps[f"random heads (seed {seed})"] = sw
    if sweeps:
        alphas = sorted({float(a) for sw in sweeps.values() for a in sw})
        lines += ["Accuracy on the calibration split by strength:", ""]
        lines += _table(["sweep"] + [_fmt(a, 2) for a in alphas],
                        [[k] + [{float(a): v for a, v in sw.items()}.get(a) for a in alphas]
                         for k, sw in sweeps.items()])
    return lines + _figures(f.parent, base, "sweep")


def _critical(f: Path, base: Path) -> list[str]:
    d = json.loads(f.read_text())
    lines = [f"### Critical layers — `{_rel(f.parent, base)}`", "", f"alpha = {d.get('alpha')}", ""]
    lines += _table(["model", "track", "position", "critical layer", "accuracy", "prompts"],
                    [[r["model"], r["track"], r["position"], r["critical_layer"], r["accuracy"],
                      ", ".join(r["prompts"])]
                     for r in d.get("table_ii", [])])
    lines += _table(["model", "position", "excluding", "rows", "r", "p"],
                    [[r["model"], r["position"], ", ".join(r.get("exclude_tracks") or []) or "–", r["n"], r["r"],
                      r["pvalue"]]
                     for r in d.get("table_iii", [])])
    return lines


def build_report(runs: Sequence[str | Path], report_path: str | Path) -> str:
    """Build the Markdown analysis report of ``runs`` (links relative to ``report_path``)."""
    report_path = Path(report_path)
    base = report_path.parent
    found = find_outputs(runs)
    lines = ["# Analysis report", "", "Runs (relative to this report): "
             + ", ".join(f"`{_rel(Path(r).resolve(), base.resolve())}`" for r in runs), "", NUMBERS_NOTE, ""]
    sections = (("lens", "Logit lens (AudioLens)", _lens), ("critical", "Critical layers", _critical),
                ("trace", "Causal tracing", _trace), ("heads", "Audio-specialist heads", _heads),
                ("calibration", "Calibration", _calibration))
    for kind, title, fn in sections:
        if not found[kind]:
            continue
        lines += [f"## {title}", ""]
        for f in found[kind]:
            try:
                lines += fn(f, base)
            except (KeyError, ValueError, TypeError) as e:
                lines += [f"(could not read `{_rel(f, base)}`: {e})", ""]
    if len(found["trace"]) > 1:
        from analysis.figures import trace_figures

        only_layers = []
        for f in found["trace"]:
            s = json.loads(f.read_text())
            label = f"{Path(str(s.get('meta', {}).get('model', '')).rstrip('/')).name} [{_rel(f.parent, base)}]"
            only_layers.append({"meta": {"model": label},
                                "tasks": {t: {"layer": v.get("layer")} for t, v in s["tasks"].items()}})
        paths = trace_figures(only_layers, base / "report_figures")
        lines += ["## Recovery rate by layer, all runs", ""]
        lines += [f"![{p.stem}]({_rel(p, base)})" for p in paths if p.suffix == ".png"] + [""]
    files = []
    for r in runs:
        root = Path(r)
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix in (".csv", ".json", ".jsonl"))
    if files:
        lines += ["## Files", ""] + [f"- [`{_rel(p, base)}`]({_rel(p, base)})" for p in files] + [""]
    return "\n".join(lines)


def write_report(runs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the analysis report of ``runs`` atomically (default: report.md in the first run); return its path."""
    from analysis.atomic import atomic_write_text

    runs = [Path(r) for r in runs]
    if out is None:
        first = runs[0] if runs[0].is_dir() else runs[0].parent
        out = first / "report.md"
    out = Path(out)
    text = build_report(runs, out)
    atomic_write_text(out, text + "\n")
    return out
