"""Calibration / evaluation splits: disjoint, complete, stratified, deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from audio_tasks.data.splits import select_split, stratified_split

# Label counts shaped like SAKURA tracks (500 clips each; uneven language counts).
TRACKS = {
    "gender": {"male": 250, "female": 250},
    "language": {"English": 63, "German": 63, "Spanish": 63, "French": 63, "Italian": 62, "Chinese": 62,
                 "Japanese": 62, "Korean": 62},
    "emotion": {"angry": 100, "disgust": 100, "fear": 100, "happy": 100, "sad": 100},
    "animal": {"dog": 56, "cat": 56, "pig": 56, "cow": 56, "frog": 56, "hen": 55, "rooster": 55, "sheep": 55,
               "crow": 55},
}


def interleaved(counts: dict[str, int]) -> list[str]:
    labels = [lab for lab, n in counts.items() for _ in range(n)]
    return [labels[(i * 7) % len(labels)] for i in range(len(labels))]  # 7 is coprime with 500


@pytest.mark.parametrize("track", list(TRACKS))
def test_disjoint_complete_stratified(track):
    labels = interleaved(TRACKS[track])
    assert len(labels) == 500
    calib, evaluation = stratified_split(labels, seed=0, fraction=0.2)
    assert len(calib) == 100 and len(evaluation) == 400
    assert not set(calib) & set(evaluation)
    assert sorted(calib + evaluation) == list(range(500))
    assert calib == sorted(calib) and evaluation == sorted(evaluation)
    per_label = Counter(labels[i] for i in calib)
    for lab, n in TRACKS[track].items():
        assert abs(per_label[lab] - 0.2 * n) < 1, (lab, per_label[lab], n)


def test_exact_counts_small():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 3
    calib, _ = stratified_split(labels, seed=3, fraction=0.5)
    # round(0.5 * 18) = 9 slots: a 5, b 2.5, c 1.5 -> floors 5+2+1 = 8, one extra to the largest remainder
    # (tie b/c -> b)
    assert Counter(labels[i] for i in calib) == {"a": 5, "b": 3, "c": 1}
    assert stratified_split(labels, 0, 0.0) == ([], list(range(18)))
    assert stratified_split(labels, 0, 1.0) == (list(range(18)), [])
    with pytest.raises(ValueError, match="calibration_fraction"):
        stratified_split(labels, 0, 1.5)


def test_stable_and_seeded():
    labels = interleaved(TRACKS["emotion"])
    first = stratified_split(labels, seed=0, fraction=0.2)
    assert stratified_split(list(labels), seed=0, fraction=0.2) == first
    assert stratified_split(labels, seed=1, fraction=0.2) != first
    # a label's split does not depend on the other labels present
    only_angry = [lab for lab in labels if lab == "angry"]
    angry_pos = [i for i, lab in enumerate(labels) if lab == "angry"]
    sub_calib, _ = stratified_split(only_angry, seed=0, fraction=0.2)
    assert [angry_pos[i] for i in sub_calib] == [i for i in first[0] if labels[i] == "angry"]


def test_independent_of_python_hash_seed():
    code = ("import json; from audio_tasks.data.splits import stratified_split; "
            f"labels = {interleaved(TRACKS['animal'])!r}; "
            "print(json.dumps(stratified_split(labels, 5, 0.2)))")
    outs = []
    for hash_seed in ("0", "123", "random"):
        env = {"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outs.append(json.loads(out.stdout))
    assert outs[0] == outs[1] == outs[2]
    assert outs[0] == [list(x) for x in stratified_split(interleaved(TRACKS["animal"]), 5, 0.2)]


def test_select_split():
    labels = ["x", "y"] * 10
    calib, evaluation = stratified_split(labels, 0, 0.2)
    assert select_split(labels, "calibration") == calib
    assert select_split(labels) == evaluation
    assert select_split(labels, "all") == list(range(20))
    with pytest.raises(ValueError, match="unknown split 'test'"):
        select_split(labels, "test")
    column = ["train", "calibration", "evaluation", "Evaluation"]
    assert select_split(labels[:4], "calibration", split_column=column) == [1]
    assert select_split(labels[:4], "evaluation", split_column=column) == [2, 3]
    assert select_split(labels[:4], "train", split_column=column) == [0]
    assert select_split(labels[:4], "all", split_column=column) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"unknown values \['dev'\]"):
        select_split(labels[:2], "evaluation", split_column=["dev", "train"], where="demo")
