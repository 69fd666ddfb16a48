"""Audio input: file paths, Hugging Face audio dicts (array+sampling_rate, or path/bytes), arrays.

Decoding uses soundfile (datasets 5 needs torchcodec for its own decoding); stereo is mixed to
mono; audio is resampled to the model's rate with a polyphase filter.  Unreadable, empty or
non-finite audio raises a clear error naming the doc and the file.
"""

from __future__ import annotations

import io
import logging
import math
from fractions import Fraction
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["load_audio", "AudioError", "warn_if_truncated"]

_warned_long = False


class AudioError(ValueError):
    pass


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x
    from scipy.signal import resample_poly

    f = Fraction(target, sr).limit_denominator(1000)
    return resample_poly(x, f.numerator, f.denominator).astype(np.float32)


def _read(src: Any) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, sr = sf.read(src, dtype="float32", always_2d=True)
    return data, int(sr)


def load_audio(item: Any, target_sr: int, *, where: str = "") -> np.ndarray:
    """Return mono float32 audio at ``target_sr`` from any supported input."""
    desc = f" ({where})" if where else ""
    try:
        if isinstance(item, (str, bytes)) and not isinstance(item, bytes):
            name = item
            data, sr = _read(item)
        elif isinstance(item, dict):
            name = str(item.get("path") or "<in-memory audio>")
            if item.get("array") is not None:
                data = np.asarray(item["array"], dtype=np.float32)
                sr = int(item.get("sampling_rate") or target_sr)
            elif item.get("bytes"):
                data, sr = _read(io.BytesIO(item["bytes"]))
            elif item.get("path"):
                data, sr = _read(item["path"])
            else:
                raise AudioError("audio dict has neither 'array', 'bytes' nor 'path'")
        elif isinstance(item, bytes):
            name = "<bytes>"
            data, sr = _read(io.BytesIO(item))
        else:
            name = "<array>"
            data = np.asarray(item, dtype=np.float32)
            sr = target_sr
    except AudioError as e:
        raise AudioError(f"unreadable audio{desc}: {e}") from None
    except Exception as e:  # soundfile / OS errors
        raise AudioError(f"unreadable audio{desc}: {item if isinstance(item, str) else type(item).__name__}: {e}") from None
    if data.ndim == 2:
        # soundfile gives (frames, channels); arrays may come as (channels, frames)
        if data.shape[0] < data.shape[1] and data.shape[0] <= 8 and not isinstance(item, str):
            data = data.T
        data = data.mean(axis=1)
    data = np.asarray(data, dtype=np.float32).reshape(-1)
    if data.size == 0:
        raise AudioError(f"empty audio{desc}: {name}")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"non-finite samples (NaN/inf) in audio{desc}: {name}")
    return _resample(data, sr, target_sr)


def warn_if_truncated(n_samples: int, sr: int, window_s: float | None) -> None:
    """Warn once when a clip is longer than the encoder window (it will be truncated)."""
    global _warned_long
    if window_s and n_samples > math.ceil(window_s * sr) and not _warned_long:
        _warned_long = True
        log.warning("audio clip of %.1f s is longer than the encoder window of %.0f s and is truncated "
                    "(warned once)", n_samples / sr, window_s)
