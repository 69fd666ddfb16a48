"""The ``audio_lalm`` model arguments (dependency-free, so result readers need not import the model).

``LOAD_ARGS`` select, load or run the model; ``STEER_KEYS`` configure an intervention; ``MODEL_ARGS`` is
every argument ``AudioLALM`` accepts.  ``analysis.results_io.NON_INTERVENTION_KEYS`` is derived from here.
"""

from __future__ import annotations

from interventions.config import STEER_KEYS

__all__ = ["LOAD_ARGS", "STEER_KEYS", "MODEL_ARGS"]

LOAD_ARGS = ("pretrained", "revision", "dtype", "device", "batch_size", "max_batch_size", "attn_implementation",
             "trust_remote_code", "parallelize", "max_gen_toks", "max_length", "share_prefix", "first_token",
             "first_token_collisions", "prep_workers")
MODEL_ARGS = LOAD_ARGS + STEER_KEYS
