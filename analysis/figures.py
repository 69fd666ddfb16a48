"""Figures of the analyses (matplotlib, Agg backend), each written as PNG and SVG.

Files are written atomically and reproducibly (no dates in the metadata, fixed SVG id salt), so a rerun on
the same numbers gives byte-identical files.

* ``layer_curves``: information score vs layer, one panel per attribute (track), one line per prompt format
  (AudioLens Fig. 2);
* ``correct_wrong``: correct vs incorrect items (Fig. 3, two y-axes);
* ``positions``: last vs penultimate vs last-with-audio-masked (Fig. 4);
* ``rr_layers``: recovery rate vs layer, one line per model/task (causal tracing Fig. 2);
* ``token_heatmap``: token (or segment) x layer recovery-rate map (Fig. 3);
* ``head_corr``: head correlation heatmap (layers x heads), specialists marked;
* ``sweep``: accuracy vs steering strength, specialists vs random head sets (mean +- std).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from lm_eval.utils import sanitize_model_name

__all__ = ["save_figure", "layer_curves", "correct_wrong", "positions", "rr_layers", "token_heatmap", "head_corr",
           "sweep", "lens_figures", "trace_figures", "heads_figures", "sweep_figures"]

_RC = {"svg.hashsalt": "audio-lalm-lab", "svg.fonttype": "path", "figure.dpi": 100, "font.size": 9}
PNG_DPI = 150
"""PNG resolution (the SVG is resolution-free)."""
TRACK_ORDER = ("gender", "language", "emotion", "animal")
"""Panel order of every per-track figure (the papers' order); other tracks follow alphabetically."""


def track_key(track: str) -> tuple[int, str]:
    t = str(track or "").lower()
    return (TRACK_ORDER.index(t) if t in TRACK_ORDER else len(TRACK_ORDER), t)


def task_key(task: Mapping[str, Any]) -> tuple:
    """Sort key of a task dict (track in :data:`TRACK_ORDER`, then prompt format, then name)."""
    return (*track_key(task.get("track", "")), str(task.get("prompt") or ""), str(task.get("task", "")))


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically; closes the figure."""
    from analysis.atomic import atomic_write_bytes

    plt = _plt()
    stem = Path(stem)
    paths = []
    with plt.rc_context(_RC):
        for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, metadata=meta, bbox_inches="tight",
                        **({"dpi": PNG_DPI} if ext == "png" else {}))
            paths.append(atomic_write_bytes(stem.with_suffix("." + ext), buf.getvalue()))
    plt.close(fig)
    return paths


def _int_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _info_axes(ax) -> None:
    """Common styling of an information-score-per-layer panel (the legend is shared, below the panels)."""
    _int_x(ax)
    ax.set_xlabel("layer")
    ax.set_ylabel("information score")
    ax.set_ylim(-0.02, 1.02)


def _shared_legend(fig, axes) -> None:
    """One legend for all panels, below them, so it never covers a curve."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 5),
                   fontsize=8, frameon=False)


def _finish(fig, title: str = "", axes=None):
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if axes is not None:
        _shared_legend(fig, axes)
    return fig


def _arr(v: Sequence[Any] | None) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in (v or [])], dtype=float)


def _grid(n: int, w: float = 3.4, h: float = 2.6):
    plt = _plt()
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def layer_curves(tasks: Sequence[Mapping[str, Any]], title: str = "", position: str = "last") -> Any:
    """``tasks``: dicts with track, prompt, info {position: [I^l]}, n_labels."""
    tracks = sorted({t["track"] for t in tasks}, key=track_key)
    fig, axes = _grid(len(tracks))
    for ax, tr in zip(axes, tracks):
        for t in sorted((t for t in tasks if t["track"] == tr), key=lambda t: t["prompt"]):
            y = _arr(t["info"].get(position))
            ax.plot(np.arange(len(y)), y, marker=".", label=t["prompt"] or t.get("task", ""))
        nl = next(t["n_labels"] for t in tasks if t["track"] == tr)
        ax.axhline(1.0 / nl, color="gray", ls=":", lw=1, label="chance")
        ax.set_title(tr)
        _info_axes(ax)
    return _finish(fig, title, axes[: len(tracks)])


def correct_wrong(tasks: Sequence[Mapping[str, Any]], title: str = "", position: str = "last") -> Any:
    """AudioLens Fig. 3: information score of correct (left axis, green) and incorrect (right axis, red) items.

    Each axis is coloured like its line (label, ticks, spine); a subset with no items says so in the panel instead
    of drawing an empty axis."""
    tasks = sorted(tasks, key=task_key)
    fig, axes = _grid(len(tasks), w=4.4, h=3.0)
    green, red = "tab:green", "tab:red"
    for ax, t in zip(axes, tasks):
        yc = _arr(t["info_correct"].get(position))
        yw = _arr(t["info_incorrect"].get(position))
        nc = int(t.get("n_correct", 0) or 0)
        nw = int(t.get("n", 0) or 0) - nc
        x = np.arange(max(len(yc), len(yw), 1))
        ax2 = ax.twinx()
        for a, y, n, color, side, what in ((ax, yc, nc, green, "left", "correct"),
                                           (ax2, yw, nw, red, "right", "incorrect")):
            if n > 0 and np.isfinite(y).any():
                a.plot(x[: len(y)], y, color=color, marker="." if side == "left" else "x",
                       ls="-" if side == "left" else "--")
                if np.nanmax(y) - np.nanmin(y) < 1e-9:  # a flat line: show it on the score's own 0..1 scale
                    a.set_ylim(-0.02, 1.02)
                a.set_ylabel(f"score, {what} (n={n})", color=color, fontsize=8)
            else:
                a.set_yticks([])
                a.text(0.5, 0.62 if side == "left" else 0.38, f"no {what} samples", transform=a.transAxes,
                       ha="center", va="center", color=color, fontsize=8)
                a.set_ylabel(f"score, {what} (none)", color=color, fontsize=8)
            a.tick_params(axis="y", colors=color, labelsize=7)
            a.spines[side].set_color(color)
            a.spines[side].set_linewidth(1.5)
        ax.set_title(t.get("task", ""))
        _int_x(ax)
        ax.set_xlabel("layer")
    fig.tight_layout(w_pad=2.5)
    if title:
        fig.suptitle(title)
        fig.tight_layout(w_pad=2.5)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=green, marker=".", label="correct items (left axis)"),
               Line2D([], [], color=red, marker="x", ls="--", label="incorrect items (right axis)")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)
    return fig


def positions(tasks: Sequence[Mapping[str, Any]], title: str = "") -> Any:
    """Plot information score per layer for each token position, one panel per task."""
    tasks = sorted(tasks, key=task_key)
    fig, axes = _grid(len(tasks))
    style = {"last": ("tab:pink", "last token"), "penultimate": ("tab:blue", "penultimate token"),
             "masked_last": ("tab:gray", "last token, audio masked")}
    for ax, t in zip(axes, tasks):
        for k, (c, lab) in style.items():
            if k in t["info"]:
                y = _arr(t["info"][k])
                ax.plot(np.arange(len(y)), y, color=c, marker=".", label=lab)
        ax.axhline(1.0 / t["n_labels"], color="black", ls=":", lw=1, label="chance")
        ax.set_title(t.get("task", ""))
        _info_axes(ax)
    return _finish(fig, title, axes[: len(tasks)])


def rr_layers(series: Mapping[str, Mapping[str, Any]], title: str = "") -> Any:
    """``series``: label -> {"mean": [...], "sem": [...], "n": [...]} (RR for layers 1..L).

    Shaded bands are ±1 standard error of the mean over the items that entered each layer's mean; the legend gives
    each curve's n (items per layer; a range when exclusions differ by layer)."""
    from matplotlib.patches import Patch

    plt = _plt()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
    handles = []
    for label, st in series.items():
        y = _arr(st.get("mean"))
        x = np.arange(1, len(y) + 1)
        ns = [int(v) for v in (st.get("n") or []) if v is not None]
        ntxt = "" if not ns else (f" (n={ns[0]})" if min(ns) == max(ns) else f" (n={min(ns)}–{max(ns)})")
        (line,) = ax.plot(x, y, marker=".", label=f"{label}{ntxt}")
        handles.append(line)
        if st.get("sem"):
            e = np.nan_to_num(_arr(st["sem"]))
            ax.fill_between(x, y - e, y + e, alpha=0.2, color=line.get_color())
    if any(st.get("sem") for st in series.values()):
        handles.append(Patch(color="gray", alpha=0.3, label="shaded: ±1 SEM"))
    ax.axhline(0, color="gray", lw=0.8)
    ax.axhline(1, color="gray", lw=0.8, ls=":")
    _int_x(ax)
    ax.set_xlabel("layer")
    ax.set_ylabel("recovery rate (mean ± SEM)")
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def token_heatmap(matrix: Sequence[Sequence[Any]], row_labels: Sequence[str], title: str = "",
                  col_start: int = 1) -> Any:
    """(rows x layers) recovery-rate map; layers numbered from ``col_start``."""
    plt = _plt()
    M = np.asarray([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * M.shape[1] + 2.5), max(2.0, 0.22 * M.shape[0] + 1.2)))
    vmax = max(1.0, float(np.nanmax(np.abs(M)))) if np.isfinite(M).any() else 1.0
    im = ax.imshow(M, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels([repr(s)[1:-1] for s in row_labels], fontsize=7)
    step = max(1, M.shape[1] // 16)
    ax.set_xticks(range(0, M.shape[1], step))
    ax.set_xticklabels([str(col_start + i) for i in range(0, M.shape[1], step)])
    ax.set_xlabel("layer")
    fig.colorbar(im, ax=ax, label="recovery rate")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def head_corr(r: Sequence[Sequence[float]], specialists: Sequence[Mapping[str, Any]] = (), title: str = "") -> Any:
    """Layers x heads map of the point-biserial r; specialists boxed.  Every head and layer is labelled up to 40
    of each; the figure grows with the model (at least 6.4 x 4.8 in, 150 dpi PNG)."""
    plt = _plt()
    R = np.asarray(r, dtype=float)
    L, H = R.shape if R.ndim == 2 else (0, 0)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(6.4, 0.32 * H + 3.0), max(4.8, 0.28 * L + 2.0)))
    vmax = float(np.nanmax(np.abs(R))) if R.size and np.nanmax(np.abs(R)) > 0 else 1.0
    im = ax.imshow(R, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                   extent=(-0.5, H - 0.5, L + 0.5, 0.5))
    if specialists:
        from matplotlib.patches import Rectangle

        for sp in specialists:  # the whole cell outlined, black under white: visible on any colour
            for color, lw in (("black", 3.0), ("white", 1.2)):
                ax.add_patch(Rectangle((sp["head"] - 0.45, sp["layer"] - 0.45), 0.9, 0.9, fill=False,
                                       edgecolor=color, linewidth=lw))
        key = Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", linewidth=2.0,
                        label=f"specialist heads (K={len(specialists)})")
        ax.legend(handles=[key], loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    from matplotlib.ticker import MaxNLocator

    if H <= 40:
        ax.set_xticks(range(H))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if L <= 40:
        ax.set_yticks(range(1, L + 1))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="point-biserial r (audio mass vs correct)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def sweep(specialist: Mapping[Any, float] | None, random: Sequence[Mapping[Any, float]] = (), title: str = "",
          extra: Mapping[str, Mapping[Any, float]] | None = None) -> Any:
    """Accuracy vs strength: ``specialist`` {alpha: acc}, ``random`` list of {alpha: acc} (mean +- std)."""
    plt = _plt()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(5.0, 3.4))

    def xy(d):
        ks = sorted(d, key=float)
        return np.array([float(k) for k in ks]), np.array([float(d[k]) for k in ks])

    if specialist:
        x, y = xy(specialist)
        ax.plot(x, y, marker="o", color="tab:blue", label="layer-guided, specialist heads")
    if random:
        ks = sorted(set.intersection(*[set(map(float, d)) for d in random]))
        vals = np.array([[float({float(k): v for k, v in d.items()}[k]) for k in ks] for d in random])
        m, s = vals.mean(0), (vals.std(0, ddof=1) if len(random) > 1 else np.zeros(len(ks)))
        ax.errorbar(ks, m, yerr=s, marker="s", color="tab:gray", capsize=3,
                    label=f"layer-guided, random heads (mean ± std, n={len(random)})")
    for label, d in (extra or {}).items():
        x, y = xy(d)
        ax.plot(x, y, marker=".", ls="--", label=label)
    ax.set_xlabel("steering strength (alpha; lambda for enrich)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)  # below: covers no line
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---- from summary files -----------------------------------------------------------------------------------


def _short(model: str) -> str:
    """The name a figure title gives a model: ``audio-lalm-reference`` for the embedded model, the folder name of
    a local checkpoint, else the hub id as given."""
    from audio_tasks.reference import model_name

    name = model_name(str(model) if model else None) if model else ""
    if not name:
        return "unknown model"
    p = Path(name.rstrip("/"))
    return p.name if p.is_absolute() or p.exists() else name


def lens_figures(summary: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the logit-lens figures of a lens summary under ``out_dir``; return their paths."""
    out = Path(out_dir)
    tasks = [dict(v, task=k) for k, v in summary["tasks"].items()]
    if not tasks:
        return []
    name = _short(summary.get("meta", {}).get("model", ""))
    paths = []
    paths += save_figure(layer_curves(tasks, f"{name}: information score at the last token"), out / "lens_layers")
    paths += save_figure(correct_wrong(tasks, f"{name}: correct vs incorrect"), out / "lens_correct_wrong")
    paths += save_figure(positions(tasks, f"{name}: token positions"), out / "lens_positions")
    return paths


def trace_figures(summaries: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """RR vs layer (all models/tasks in one plot) and one token x layer heatmap per model x task."""
    out = Path(out_dir)
    series, paths, models = {}, [], []
    for sm in summaries:
        model = _short(sm.get("meta", {}).get("model", ""))
        models.append(model)
        fs = sanitize_model_name(model)  # lm-eval names its model folders this way
        tasks = sorted(sm["tasks"].items(), key=lambda kv: task_key({"task": kv[0], **kv[1]}))
        for task, st in tasks:
            if st.get("layer"):
                series[f"{model} {task}" if len(summaries) > 1 else task] = st["layer"]
            pos = st.get("positions")
            if pos:
                labels = pos["tokens"] if pos.get("tokens") else [str(p) for p in pos["rel_positions"]]
                if pos.get("segments"):
                    labels = [f"{t} [{s}]" for t, s in zip(labels, pos["segments"])]
                stem = f"trace_tokens_{task}" if len(summaries) == 1 else f"trace_tokens_{fs}_{task}"
                paths += save_figure(token_heatmap(pos["mean"], labels, f"{model}: {task}, token-wise RR"), out / stem)
            segs = st.get("segments")
            if segs:
                names = list(segs)
                stem = f"trace_segments_{task}" if len(summaries) == 1 else f"trace_segments_{fs}_{task}"
                paths += save_figure(token_heatmap([segs[k]["mean"] for k in names], names,
                                                   f"{model}: {task}, RR by segment"), out / stem)
    if series:
        who = ", ".join(dict.fromkeys(models))
        paths += save_figure(rr_layers(series, f"{who}: layer-wise recovery rate (silence baseline)"),
                             out / "trace_rr_layers")
    return paths


def heads_figures(summary: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the head-correlation figure of a heads summary under ``out_dir``; return its paths."""
    out = Path(out_dir)
    name = _short(summary.get("meta", {}).get("model", ""))
    return save_figure(head_corr(summary["r"], summary.get("specialists", ()), f"{name}: head correlations"),
                       out / "heads_corr")


def sweep_figures(artifact: Mapping[str, Any], controls: Mapping[str, Any] | None, out_dir: str | Path) -> list[Path]:
    """Layer-guided sweep of a calibration artifact with its random-head controls (if any)."""
    out = Path(out_dir)
    spec = (artifact.get("layer_guided") or {}).get("sweep")
    rand = list((controls or {}).get("random", {}).values())
    extra = {}
    names = {"head": "head-level, specialist heads", "single_layer": "best single layer", "enrich": "enrich (lambda)"}
    for k, label in names.items():
        if (artifact.get(k) or {}).get("sweep"):
            extra[label] = artifact[k]["sweep"]
    if not spec and not rand and not extra:
        return []
    name = _short((artifact.get("meta") or {}).get("model_id", ""))
    K = (artifact.get("heads") or {}).get("K")
    ks = f", K={K} heads" if K else ""
    return save_figure(sweep(spec, rand, f"{name}: steering strength (calibration split{ks})", extra), out / "sweep")
