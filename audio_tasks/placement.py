"""Where ``audio_lalm`` runs: the process's rank and world size (accelerate) and the device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["Placement", "place"]


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
    user ``asked`` for it, INFO when it was only lm-eval's CLI default."""
    import torch
    from accelerate import Accelerator, PartialState

    state = PartialState()
    rank, world_size = state.process_index, state.num_processes
    accelerator = Accelerator() if world_size > 1 else None
    if world_size > 1:
        device = str(state.device)
    elif not device:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif str(device).startswith("cuda") and not torch.cuda.is_available():
        (log.warning if asked else log.info)("audio_lalm: device=%s requested but CUDA is not available; using cpu",
                                             device)
        device = "cpu"
    return Placement(rank, world_size, accelerator, str(device))
