"""Where ``audio_lalm`` runs: the process's rank and world size (accelerate) and the device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["Placement", "place", "single_device"]


@dataclass
class Placement:
    """Rank, world size, the accelerator (several processes only) and the device string."""
    rank: int
    world_size: int
    accelerator: Any
    device: str


def place(device: str | None, *, asked: bool = True) -> Placement:
    """Several processes (``accelerate launch``): each on its own device; else ``device`` or the GPU when there
    is one.  A CUDA device without CUDA falls back to the CPU like lm-eval's ``hf`` model: a WARNING when the
    user ``asked`` for it, INFO when it was only lm-eval's CLI default (:func:`single_device`)."""
    from accelerate import Accelerator, PartialState

    state = PartialState()
    rank, world_size = state.process_index, state.num_processes
    accelerator = Accelerator() if world_size > 1 else None
    device = str(state.device) if world_size > 1 else single_device(device, asked=asked)
    return Placement(rank, world_size, accelerator, str(device))


def single_device(device: str | None, *, asked: bool = True) -> str:
    """``device``, or the GPU when there is one; a CUDA device without CUDA falls back to the CPU (a WARNING when
    the user ``asked`` for it, INFO when it was only lm-eval's CLI default)."""
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        (log.warning if asked else log.info)("audio_lalm: device=%s requested but CUDA is not available; using cpu",
                                             device)
        return "cpu"
    return str(device)
