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


class AudioError(ValueError):
    """An audio input that cannot be loaded or used."""
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


def load_audio(item: Any, target_sr: int, *, where: str = "", warned: set[str] | None = None) -> np.ndarray:
    """Return mono float32 audio at ``target_sr`` from any supported input (``warned``: see
    :func:`warn_if_short_wav`)."""
    desc = f" ({where})" if where else ""
    try:
        if isinstance(item, (str, bytes)) and not isinstance(item, bytes):
            name = item
            data, sr = _read(item)
            warn_if_short_wav(item, where, warned=warned)
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
        what = item if isinstance(item, str) else type(item).__name__
        raise AudioError(f"unreadable audio{desc}: {what}: {e}") from None
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


def warn_if_truncated(n_samples: int, sr: int, window_s: float | None, where: str = "", *,
                      warned: set[str] | None = None) -> None:
    """Warn, naming the doc, when a clip is longer than the encoder window (it is truncated).

    ``warned``: a set owned by the caller (the model's preparer, one per run): the warning is then given once
    and later long clips are truncated silently.  Without it every long clip is reported."""
    if not window_s or n_samples <= math.ceil(window_s * sr):
        return
    if warned is not None:
        if "long clip" in warned:
            return
        warned.add("long clip")
    log.warning("audio clip of %.1f s%s is longer than the encoder window of %.0f s and is truncated "
                "(warned once; later long clips are truncated silently)", n_samples / sr,
                f" ({where})" if where else "", window_s)


def wav_shortfall(path: str) -> tuple[int, int] | None:
    """(declared, present) byte counts of a WAV file's data chunk when the header claims more than the file
    holds (a truncated download or copy); None otherwise or for other formats."""
    import os
    import struct

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                cid, n = struct.unpack("<4sI", fh.read(8))
                if cid == b"data":
                    present = size - pos - 8
                    return (n, present) if n != 0xFFFFFFFF and n > present else None
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


def warn_if_short_wav(path: str, where: str = "", *, warned: set[str] | None = None) -> None:
    """Warn when a WAV header claims more samples than the file holds; once per file and ``warned`` (a set
    owned by the caller, one per run), every time without it."""
    if warned is not None and path in warned:
        return
    short = wav_shortfall(path)
    if short:
        if warned is not None:
            warned.add(path)
        log.warning("audio file %s%s is truncated: its header declares %d data bytes but only %d are present; "
                    "the %.0f%% that is there is used", path, f" ({where})" if where else "", short[0], short[1],
                    100.0 * short[1] / max(1, short[0]))
