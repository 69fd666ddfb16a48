"""audio_tasks.requests: the decoded-clip cache of ``load_clips`` is bounded by bytes, and cached clips are the
clips ``soundfile`` reads (checked against the files written here)."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from audio_tasks.requests import load_clips
from interventions.byte_lru import ByteLRU


class _Engine:
    sampling_rate = 16000
    audio_window_s = None


def test_clip_cache_keeps_clips_by_path_within_its_byte_budget(tmp_path):
    rng = np.random.default_rng(0)
    paths, waves = [], []
    for i, n in enumerate((16000, 8000, 4000)):
        w = (0.1 * rng.standard_normal(n)).astype(np.float32)
        p = tmp_path / f"c{i}.wav"
        sf.write(p, w, 16000, subtype="FLOAT")
        paths.append(str(p))
        waves.append(w)
    cache: ByteLRU[np.ndarray] = ByteLRU(16000 * 4 + 8000 * 4)  # room for clips 0 and 1, not for all three
    for p, w in zip(paths, waves):
        (got,) = load_clips(_Engine(), {"audio": [p]}, "doc", cache)  # type: ignore[arg-type]
        np.testing.assert_array_equal(got, sf.read(p, dtype="float32")[0])
        np.testing.assert_array_equal(got, w)
    assert list(cache.keys()) == paths[1:] and cache.nbytes == (8000 + 4000) * 4  # clip 0 (oldest) evicted
    sf.write(paths[1], np.zeros(8000, dtype=np.float32), 16000, subtype="FLOAT")  # served from the cache now
    (again,) = load_clips(_Engine(), {"audio": [paths[1]]}, "doc", cache)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again, waves[1])
