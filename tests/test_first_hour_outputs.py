"""Outputs named and drawn for a reader (issue "the first hour"): the embedded model's name, logged targets,
figure layout (panel order, legends, twin axes, SEM bands, sizes) and the report's number format."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import figures
from analysis.report import _fmt, build_report

NAME = "audio-lalm-reference"
ORDER = ["gender", "language", "emotion", "animal"]


def _lens_tasks(n_correct=None):
    rng = np.random.default_rng(0)
    tasks = []
    for track in ["animal", "emotion", "gender", "language"]:  # alphabetical on purpose
        info = list(rng.uniform(0, 1, 5))
        n = 8
        nc = n if n_correct is None else n_correct
        tasks.append({"task": f"demo_{track}", "track": track, "prompt": "p3", "n_labels": 2, "n": n, "n_correct": nc,
                      "info": {"last": info, "penultimate": info, "masked_last": info},
                      "info_correct": {"last": info}, "info_incorrect": {"last": info if nc < n else [None] * 5}})
    return tasks


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]


def test_embedded_model_name_everywhere_it_is_derived():
    from analysis.results_io import EMBEDDED_MODEL, split_model_args
    from audio_tasks.model import REFERENCE_MODEL_DIR
    from audio_tasks.reference import REFERENCE_MODEL_NAME, model_name

    assert REFERENCE_MODEL_NAME == NAME == EMBEDDED_MODEL
    assert model_name(None) == model_name(str(REFERENCE_MODEL_DIR)) == NAME
    assert model_name("Qwen/Qwen2-Audio-7B-Instruct") == "Qwen/Qwen2-Audio-7B-Instruct"
    assert figures._short(str(REFERENCE_MODEL_DIR)) == NAME
    assert figures._short("Qwen/Qwen2-Audio-7B-Instruct") == "Qwen/Qwen2-Audio-7B-Instruct"
    assert split_model_args({"steer": "none"})[0] == NAME


def test_lm_eval_tracker_names_the_embedded_model():
    from lm_eval.loggers import evaluation_tracker as et

    import audio_tasks._startup as st

    st.patch_tracker(et)  # what the start-up hook does on import (idempotent)
    t = et.GeneralConfigTracker()
    t.log_experiment_args("audio_lalm", "device=cpu,steer=layer_guided", None, None, False)
    assert (t.model_name, t.model_name_sanitized) == (NAME, NAME)
    t.log_experiment_args("audio_lalm", "pretrained=org/model,steer=none", None, None, False)
    assert t.model_name == "org/model"
    t.log_experiment_args("hf", "", None, None, False)  # other models keep lm-eval's behaviour (random id)
    assert t.model_name != NAME and len(t.model_name) == 8


def test_logged_target_is_the_gold_choice():
    from audio_tasks.tasks.utils import doc_to_target

    assert doc_to_target({"choices": ["a", "b", "c"], "gold": 1}) == "b"
    assert doc_to_target({"choices": ["male", "female"], "gold": 0}) == "male"


def test_panels_in_track_order_and_shared_legend_below():
    tasks = _lens_tasks(n_correct=5)
    for fig in (figures.layer_curves(tasks, "t"), figures.positions(tasks, "t"), figures.correct_wrong(tasks, "t")):
        titles = [t for t in _titles(fig) if t]
        assert [t.replace("demo_", "") for t in titles] == ORDER
        # no legend inside a panel (it would cover curves); one figure legend below the panels
        assert all(ax.get_legend() is None for ax in fig.axes)
        assert len(fig.legends) == 1
        fig.canvas.draw()
        leg = fig.legends[0].get_window_extent()
        lowest_axis = min(ax.get_window_extent().y0 for ax in fig.axes if ax.get_visible())
        assert leg.y1 <= lowest_axis


def test_correct_wrong_says_none_and_ties_axes_to_lines():
    import matplotlib.colors as mc

    fig = figures.correct_wrong(_lens_tasks(n_correct=8), "t")  # every item correct
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("no incorrect samples") == 4
    # no empty -0.05..0.05 right axis: it has no ticks
    twins = [ax for ax in fig.axes if ax.yaxis.get_label_position() == "right"]
    assert len(twins) == 4 and all(len(ax.get_yticks()) == 0 for ax in twins)
    fig = figures.correct_wrong(_lens_tasks(n_correct=5), "t")
    for ax in fig.axes:
        if not ax.lines:
            continue
        line_color = mc.to_hex(ax.lines[0].get_color())
        assert mc.to_hex(ax.yaxis.label.get_color()) == line_color
        side = ax.yaxis.get_label_position()
        assert mc.to_hex(ax.spines[side].get_edgecolor()) == line_color


def test_rr_layers_labels_sem_and_n():
    fig = figures.rr_layers({"demo_gender": {"mean": [0.1, 0.5, 0.9], "sem": [0.05, 0.1, 0.05], "n": [6, 6, 6]},
                             "demo_animal": {"mean": [0.0, 0.2, 0.4], "sem": [0.1, 0.1, 0.1], "n": [4, 5, 5]}}, "t")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "demo_gender (n=6)" in labels and "demo_animal (n=4–5)" in labels
    assert any("SEM" in lab for lab in labels)


def test_heads_corr_is_large_enough_to_read(tmp_path):
    from PIL import Image

    r = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 4))
    figures.save_figure(figures.head_corr(r, [{"layer": 2, "head": 1}], "t"), tmp_path / "h")
    w, h = Image.open(tmp_path / "h.png").size
    assert w >= 800 and h >= 600, (w, h)


@pytest.mark.parametrize("v,out", [(6.42e-12, "0.000"), (1.0, "1.000"), (-1e-9, "0.000"), (12345.678, "12345.678"),
                                   (None, "–"), (float("nan"), "–")])
def test_report_number_format(v, out):
    assert _fmt(v) == out


def test_report_p_values_and_relative_paths(tmp_path):
    import json

    run = tmp_path / "runs" / "lens"
    run.mkdir(parents=True)
    (run / "critical_tables.json").write_text(json.dumps({
        "alpha": 0.2, "table_ii": [], "rows": [],
        "table_iii": [{"model": NAME, "position": "last", "exclude_tracks": [], "n": 4, "r": 0.5, "pvalue": 1e-7}]}))
    text = build_report([run], tmp_path / "rep" / "report.md")
    assert "<0.001" in text and "e-07" not in text
    assert str(tmp_path) not in text and "`../runs/lens`" in text
    assert "`–` = no value" in text
