"""Clip identity: the one content hash of an audio waveform used anywhere in the project.

Every cache keyed by a clip (encoded audio, placeholder counts, prefix KV, decoded audio, request grouping)
uses :func:`clip_key`.  (Hashes of files and artifacts for fingerprints are a different thing.)
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["clip_key"]


def clip_key(wave: np.ndarray) -> str:
    """Return a cache key of an audio clip: content hash (of its float32 samples) and length."""
    a = np.ascontiguousarray(wave, dtype=np.float32)
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() + f":{a.shape[0]}"
