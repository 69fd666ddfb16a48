"""Tests of the synthetic SAKURA-format dataset (audio_tasks.synthetic), on tiny generated sets."""

from __future__ import annotations

import collections
import csv
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_tasks import synthetic as S

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=18, n_calibration=9, n_evaluation=18)
TINY = dict(n_train=3, n_calibration=2, n_evaluation=2)
SR = 16000


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_small")
    S.generate(root, seed=0, workers=1, **SMALL)
    return root


def _rows(root: Path, track: str) -> list[dict]:
    with open(root / "data" / track / "metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _audio(root: Path, track: str, row: dict) -> np.ndarray:
    x, sr = sf.read(root / "data" / track / "audio" / row["file"], dtype="float64")
    assert sr == SR
    return x


# ---- independent signal measurements (not using the generator's code) ------------------------------------

def _median_f0(x: np.ndarray, sr: int = SR) -> float:
    """Median autocorrelation f0 (Hz) over the louder 40 ms frames."""
    fl, hop = 640, 160
    frames = np.lib.stride_tricks.sliding_window_view(x, fl)[::hop]
    energy = (frames ** 2).mean(axis=1)
    lo, hi = sr // 400, sr // 60
    f0s = []
    for fr in frames[energy > 0.1 * energy.max()]:
        fr = fr - fr.mean()
        ac = np.correlate(fr, fr, "full")[fl - 1:]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4:
            f0s.append(sr / lag)
    assert f0s, "no voiced frame found"
    return float(np.median(f0s))


def _centroid(x: np.ndarray, sr: int = SR) -> float:
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1.0 / sr)
    return float((p * f).sum() / p.sum())


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2)))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "data").rglob("*")) if p.is_file()}


# ---- layout ------------------------------------------------------------------------------------------------

def test_layout_and_columns(small_root):
    assert sorted(p.name for p in (small_root / "data").iterdir()) == sorted(S.TRACKS)
    assert (small_root / S.MANIFEST_NAME).is_file()
    for track in S.TRACKS:
        tdir = small_root / "data" / track
        with open(tdir / "metadata.csv", newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        assert header == ["file", "attribute_label", "single_instruction", "single_answer", "multi_instruction",
                          "multi_answer", "split"]
        rows = _rows(small_root, track)
        assert len(rows) == sum(SMALL.values())
        assert {r["attribute_label"] for r in rows} <= set(S.LABELS[track])
        assert {r["attribute_label"] for r in rows} == set(S.LABELS[track])
        assert sorted(p.name for p in (tdir / "audio").iterdir()) == sorted(r["file"] for r in rows)
        for r in rows:
            prefix = {"train": "train", "calibration": "calib", "evaluation": "eval"}[r["split"]]
            assert re.fullmatch(rf"{prefix}_\d{{4}}\.wav", r["file"]), r["file"]
            assert not any(lab.lower() in r["file"].lower() for lab in S.LABELS[track])


def test_label_sets_match_sakura():
    assert S.LABELS["Gender"] == ("male", "female")
    assert S.LABELS["Language"] == ("English", "German", "Spanish", "French", "Italian", "Chinese", "Japanese",
                                    "Korean")
    assert S.LABELS["Emotion"] == ("angry", "disgust", "fear", "happy", "sad")
    assert S.LABELS["Animal"] == ("dog", "cat", "pig", "cow", "frog", "hen", "rooster", "sheep", "crow")


def test_splits_disjoint_and_stratified(small_root):
    for track in S.TRACKS:
        rows = _rows(small_root, track)
        by_split = collections.defaultdict(list)
        for r in rows:
            by_split[r["split"]].append(r)
        assert set(by_split) == set(S.SPLITS)
        names = [r["file"] for r in rows]
        assert len(names) == len(set(names))
        for split, n in (("train", SMALL["n_train"]), ("calibration", SMALL["n_calibration"]),
                         ("evaluation", SMALL["n_evaluation"])):
            assert len(by_split[split]) == n
            counts = collections.Counter(r["attribute_label"] for r in by_split[split])
            full = [counts.get(lab, 0) for lab in S.LABELS[track]]
            assert max(full) - min(full) <= 1, (track, split, counts)
            assert sorted(int(r["file"][-8:-4]) for r in by_split[split]) == list(range(n))
        # audio content is disjoint too: no identical clips across splits
        digests = [hashlib.sha256(_audio(small_root, track, r).tobytes()).hexdigest() for r in rows]
        assert len(set(digests)) == len(digests)


def test_questions_sakura_style(small_root):
    opt_re = re.compile(r"\(([a-z])\) ")
    for track in S.TRACKS:
        for r in _rows(small_root, track):
            for q, a in (("single_instruction", "single_answer"), ("multi_instruction", "multi_answer")):
                text = r[q]
                letters = opt_re.findall(text)
                n = len(letters)
                assert letters == [chr(97 + i) for i in range(n)], text
                assert (n == 2) if track == "Gender" else (2 <= n <= 4), text
                parts = re.split(r" ?\([a-z]\) ", text)
                options = parts[1:]
                assert len(set(options)) == n
                m = re.fullmatch(r"\(([a-z])\) (.+)", r[a])
                assert m, r[a]
                assert options[ord(m.group(1)) - 97] == m.group(2)
            # the single answer names the attribute label (Gender capitalised in the options)
            ans = r["single_answer"].split(") ", 1)[1]
            label = r["attribute_label"]
            assert ans == (label.capitalize() if track == "Gender" else label)
            if track == "Gender":
                assert r["multi_answer"].split(") ", 1)[1] in (
                    ("Ms.", "Madam", "Mother", "Aunt") if label == "female" else ("Mr.", "Sir", "Father", "Uncle"))


# ---- audio -------------------------------------------------------------------------------------------------

def test_audio_format(small_root):
    for track in S.TRACKS:
        for r in _rows(small_root, track):
            path = small_root / "data" / track / "audio" / r["file"]
            info = sf.info(path)
            assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
            assert 1.0 - 1e-3 <= info.duration <= 2.0 + 1e-3
            x = _audio(small_root, track, r)
            assert np.all(np.isfinite(x))
            assert np.max(np.abs(x)) <= 1.0
            peak_db = 20 * np.log10(np.max(np.abs(x)))
            assert -12.1 <= peak_db <= -2.9, (track, r["file"], peak_db)
            assert _rms(x) > 0.005, (track, r["file"])


def test_gender_separable_by_f0(small_root):
    f0 = collections.defaultdict(list)
    for r in _rows(small_root, "Gender"):
        f0[r["attribute_label"]].append(_median_f0(_audio(small_root, "Gender", r)))
    male, female = np.array(f0["male"]), np.array(f0["female"])
    assert male.max() < female.min(), (male.max(), female.min())
    assert 90 < np.median(male) < 150 and 180 < np.median(female) < 260


def test_emotion_angry_louder_than_sad(small_root):
    rms = collections.defaultdict(list)
    for r in _rows(small_root, "Emotion"):
        rms[r["attribute_label"]].append(_rms(_audio(small_root, "Emotion", r)))
    assert np.mean(rms["angry"]) > 1.5 * np.mean(rms["sad"])
    # sad is also lower-pitched on average than angry / happy / fear
    f0 = collections.defaultdict(list)
    for r in _rows(small_root, "Emotion"):
        f0[r["attribute_label"]].append(_median_f0(_audio(small_root, "Emotion", r)))
    assert np.mean(f0["sad"]) < min(np.mean(f0["angry"]), np.mean(f0["happy"]), np.mean(f0["fear"]))


def test_animal_spectral_centroids_differ(small_root):
    cen = collections.defaultdict(list)
    for r in _rows(small_root, "Animal"):
        cen[r["attribute_label"]].append(_centroid(_audio(small_root, "Animal", r)))
    low = cen["cow"] + cen["pig"]
    high = cen["hen"] + cen["crow"]
    assert max(low) < min(high), (max(low), min(high))
    assert np.mean(cen["pig"]) < np.mean(cen["rooster"])


def test_language_classes_differ(small_root):
    """Syllable rate differs: Japanese (mora-timed, fast) has more energy dips per second than German."""
    def dips_per_s(x):
        fr = np.lib.stride_tricks.sliding_window_view(x, 320)[::80]
        e = 10 * np.log10((fr ** 2).mean(axis=1) + 1e-10)
        e = np.convolve(e, np.ones(3) / 3, mode="same")
        mins = (e[1:-1] < e[:-2]) & (e[1:-1] <= e[2:]) & (e[1:-1] < e.max() - 10)
        return mins.sum() / (x.size / SR)

    rates = collections.defaultdict(list)
    for r in _rows(small_root, "Language"):
        rates[r["attribute_label"]].append(dips_per_s(_audio(small_root, "Language", r)))
    assert np.mean(rates["Japanese"]) > np.mean(rates["German"])


# ---- determinism -------------------------------------------------------------------------------------------

def test_deterministic(tmp_path):
    a = S.generate(tmp_path / "a", seed=5, workers=1, **TINY)
    b = S.generate(tmp_path / "b", seed=5, workers=1, **TINY)
    c = S.generate(tmp_path / "c", seed=6, workers=1, **TINY)
    ta, tb, tc = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert ta == tb
    assert (a / S.MANIFEST_NAME).read_bytes() == (b / S.MANIFEST_NAME).read_bytes()
    assert set(ta) == set(tc)
    wavs = [k for k in ta if k.endswith(".wav")]
    assert all(ta[k] != tc[k] for k in wavs)
    assert all(ta[k] != tc[k] for k in ta if k.endswith(".csv"))


def test_parallel_matches_serial(tmp_path):
    kw = dict(seed=1, n_train=30, n_calibration=3, n_evaluation=3, tracks=("Gender", "Animal"))
    a = S.generate(tmp_path / "serial", workers=1, **kw)
    b = S.generate(tmp_path / "parallel", workers=2, **kw)
    assert _tree_bytes(a) == _tree_bytes(b)


def test_generate_refuses_existing(tmp_path):
    S.generate(tmp_path, seed=0, workers=1, tracks=("Gender",), n_train=1, n_calibration=1, n_evaluation=1)
    with pytest.raises(FileExistsError):
        S.generate(tmp_path, seed=0, workers=1, tracks=("Gender",), n_train=1, n_calibration=1, n_evaluation=1)
    S.generate(tmp_path, seed=0, workers=1, tracks=("Gender",), n_train=2, n_calibration=1, n_evaluation=1,
               overwrite=True)
    assert len(_rows(tmp_path, "Gender")) == 4
    assert len(list((tmp_path / "data" / "Gender" / "audio").iterdir())) == 4


# ---- cache -------------------------------------------------------------------------------------------------

def test_dataset_dir_default_name(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_LALM_CACHE", str(tmp_path / "cache"))
    assert S.dataset_dir() == tmp_path / "cache" / "synthetic_sakura_v1_seed0"
    assert S.dataset_dir(seed=3) == tmp_path / "cache" / "synthetic_sakura_v1_seed3"
    assert S.dataset_dir(seed=0, n_train=240, workers=1) == tmp_path / "cache" / "synthetic_sakura_v1_seed0"
    assert S.dataset_dir(seed=0, n_train=4).name.startswith("synthetic_sakura_v1_seed0_")
    assert S.dataset_dir(tmp_path / "other", seed=2) == tmp_path / "other" / "synthetic_sakura_v1_seed2"
    monkeypatch.delenv("AUDIO_LALM_CACHE")
    assert S.default_cache_dir() == Path.home() / ".cache" / "audio_lalm"


def test_ensure_dataset_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_LALM_CACHE", str(tmp_path / "cache"))
    kw = dict(tracks=("Gender", "Animal"), n_train=2, n_calibration=1, n_evaluation=1)
    d = S.ensure_dataset(seed=2, **kw)
    assert d.parent == tmp_path / "cache" and (d / "data" / "Gender" / "metadata.csv").is_file()
    assert [p.name for p in d.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    reference = _tree_bytes(d)

    # reused as is: no regeneration
    calls = []
    real_generate = S.generate
    monkeypatch.setattr(S, "generate", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    assert S.ensure_dataset(seed=2, verify=True, **kw) == d
    assert calls == []

    # corrupt: a clip is missing -> regenerated, identical
    victim = next((d / "data" / "Animal" / "audio").iterdir())
    victim.unlink()
    assert S.ensure_dataset(seed=2, **kw) == d
    assert calls == [1]
    assert _tree_bytes(d) == reference

    # corrupt content (same size) is caught by verify=True
    wav = d / "data" / "Gender" / "audio" / "eval_0000.wav"
    data = bytearray(wav.read_bytes())
    data[-2:] = bytes([data[-2] ^ 0xFF, data[-1]])
    wav.write_bytes(bytes(data))
    assert S.ensure_dataset(seed=2, **kw) == d and calls == [1]  # quick check only looks at sizes
    S.ensure_dataset(seed=2, verify=True, **kw)
    assert calls == [1, 1] and _tree_bytes(d) == reference

    # edited metadata -> regenerated
    meta = d / "data" / "Gender" / "metadata.csv"
    meta.write_text(meta.read_text(encoding="utf-8").replace("female", "male"), encoding="utf-8")
    S.ensure_dataset(seed=2, **kw)
    assert calls == [1, 1, 1] and _tree_bytes(d) == reference

    # missing manifest -> regenerated
    (d / S.MANIFEST_NAME).unlink()
    S.ensure_dataset(seed=2, **kw)
    assert len(calls) == 4 and _tree_bytes(d) == reference
    leftovers = [p.name for p in d.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_read_metadata(small_root):
    rows = S.read_metadata(small_root, "Emotion", split="calibration")
    assert len(rows) == SMALL["n_calibration"]
    assert all(r["split"] == "calibration" and os.path.isabs(r["path"]) and os.path.isfile(r["path"]) for r in rows)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "audio_tasks.synthetic", "--out", str(out), "--seed", "4", "--n-train", "2",
         "--n-calibration", "1", "--n-evaluation", "1", "--tracks", "Language"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = _rows(out, "Language")
    assert [r["split"] for r in rows] == ["train", "train", "calibration", "evaluation"]
