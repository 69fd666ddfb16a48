"""audio_tasks.audio: every supported input (path, HF audio dict, bytes, array) gives the expected mono float32
array at the model's rate; bad input raises ``AudioError`` naming the doc and the file; long clips warn once."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_tasks.audio import AudioError, load_audio, warn_if_truncated


def _sine(freq: float, sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_wav_path_mono_at_the_same_rate_is_returned_as_written(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-0.9, 0.9, 4000).astype(np.float32)
    p = tmp_path / "mono.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    got = load_audio(str(p), 16000)
    assert got.dtype == np.float32 and got.shape == (4000,)
    np.testing.assert_array_equal(got, x)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    left, right = rng.uniform(-0.5, 0.5, (2, 3000)).astype(np.float32)
    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(str(p), 16000), (left + right) / 2, rtol=0, atol=1e-7)
    # arrays in memory may come channels-first (2, N) or channels-last (N, 2): both are mixed the same way
    for arr in (np.stack([left, right]), np.stack([left, right], axis=1)):
        got = load_audio({"array": arr, "sampling_rate": 16000}, 16000)
        np.testing.assert_allclose(got, (left + right) / 2, rtol=0, atol=1e-7)


@pytest.mark.parametrize("sr,target", [(8000, 16000), (44100, 16000), (48000, 16000), (16000, 24000)])
def test_resampling_keeps_the_tone_and_the_duration(tmp_path: Path, sr: int, target: int) -> None:
    p = tmp_path / f"tone_{sr}.wav"
    sf.write(p, _sine(440.0, sr, 0.5), sr, subtype="FLOAT")
    got = load_audio(str(p), target)
    assert got.dtype == np.float32
    assert len(got) == int(0.5 * target)  # the same 0.5 s at the new rate
    want = _sine(440.0, target, 0.5)
    mid = slice(len(got) // 10, -len(got) // 10)  # away from the filter's edge effects
    np.testing.assert_allclose(got[mid], want[mid], rtol=0, atol=2e-3)


def test_dict_bytes_and_array_inputs_agree_with_the_file(tmp_path: Path) -> None:
    x = _sine(300.0, 8000, 0.25)
    p = tmp_path / "c.wav"
    sf.write(p, x, 8000, subtype="FLOAT")
    ref = load_audio(str(p), 16000)
    buf = io.BytesIO()
    sf.write(buf, x, 8000, format="WAV", subtype="FLOAT")
    raw = buf.getvalue()
    for item in ({"path": str(p)}, {"bytes": raw, "path": "ignored-when-bytes.wav"}, raw,
                 {"array": x.tolist(), "sampling_rate": 8000}):
        np.testing.assert_array_equal(load_audio(item, 16000), ref)
    # an array (or a dict without a rate) is taken to be at the target rate already
    np.testing.assert_array_equal(load_audio(x, 16000), x)
    np.testing.assert_array_equal(load_audio({"array": x}, 16000), x)


def test_missing_file_names_the_file_and_the_doc(tmp_path: Path) -> None:
    missing = tmp_path / "missing_clip.wav"
    with pytest.raises(AudioError, match=r"unreadable audio \(task t, doc 3\): .*missing_clip\.wav"):
        load_audio(str(missing), 16000, where="task t, doc 3")
    with pytest.raises(AudioError, match=r"unreadable audio \(doc 9\): .*missing_clip\.wav"):
        load_audio({"path": str(missing)}, 16000, where="doc 9")
    assert issubclass(AudioError, ValueError)


def test_not_audio_empty_and_non_finite_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "notes.wav"
    junk.write_text("this is not a wav file")
    with pytest.raises(AudioError, match=r"unreadable audio \(doc 1\): .*notes\.wav"):
        load_audio(str(junk), 16000, where="doc 1")
    with pytest.raises(AudioError, match=r"audio dict has neither 'array', 'bytes' nor 'path'"):
        load_audio({"sampling_rate": 16000}, 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty audio \(doc 2\): .*empty\.wav"):
        load_audio(str(empty), 16000, where="doc 2")
    bad = np.ones(100, dtype=np.float32)
    bad[50] = np.nan
    with pytest.raises(AudioError, match=r"non-finite samples \(NaN/inf\) in audio \(doc 4\): <array>"):
        load_audio(bad, 16000, where="doc 4")
    inf = tmp_path / "inf.wav"
    sf.write(inf, np.array([0.0, np.inf, 0.0], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"non-finite .*inf\.wav"):
        load_audio(str(inf), 16000)


def test_long_clip_warning_once_and_only_past_the_window(caplog) -> None:
    run: set[str] = set()  # "once per run": the set a run (the model's preparer) owns
    with caplog.at_level(logging.WARNING, logger="audio_tasks.audio"):
        warn_if_truncated(16000 * 30, 16000, 30.0, "doc exactly-30s", warned=run)  # fits the window exactly
        warn_if_truncated(16000 * 40, 16000, None, "doc no-window", warned=run)  # no window: nothing to truncate
        assert not caplog.records
        warn_if_truncated(16000 * 30 + 1, 16000, 30.0, "task t, doc 7", warned=run)
        warn_if_truncated(16000 * 45, 16000, 30.0, "task t, doc 8", warned=run)
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert "(task t, doc 7)" in msg and "30.0 s" in msg and "window of 30 s" in msg and "truncated" in msg
