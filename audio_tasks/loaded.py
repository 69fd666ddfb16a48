"""A loaded model for the analyses: an engine (:func:`interventions.load_engine`) and the run settings they read,
with no lm-eval object (no accelerate state, no ``--use_cache`` guard, no request plumbing).

``LoadedModel.from_model_args(kwargs)`` checks the same ``--model_args`` as ``audio_lalm``
(:func:`audio_tasks.model_args.parse_model_args`, every argument named in its error) before loading anything, and
offers what :func:`audio_tasks.items.task_items` and :mod:`audio_tasks.calibration` read from a model: ``engine``,
``model``/``spec``, ``pretrained``/``revision``/``identity``, ``steer_cfg``, ``batch_size_per_gpu`` and
``item_options()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audio_tasks.requests import MAX_CACHED_CLIP_BYTES
from interventions.byte_lru import ByteLRU
from interventions.config import SteerConfig
from interventions.engine import Engine

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """An engine plus the settings of one analysis run."""

    engine: Engine
    pretrained: str  # the checkpoint path or id (the embedded reference model's folder when none was given)
    model_name: str  # "audio-lalm-reference" for the embedded model, else ``pretrained``
    revision: str | None
    steer_cfg: SteerConfig
    batch_size_per_gpu: int
    first_token: str
    first_token_collisions: str
    clip_cache: ByteLRU[np.ndarray] = field(default_factory=lambda: ByteLRU(MAX_CACHED_CLIP_BYTES))
    warned: set[str] = field(default_factory=set)  # once-only audio warnings of this run
    _identity: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_model_args(cls, kwargs: dict[str, Any], *, steer_cfg: SteerConfig | None = None) -> LoadedModel:
        """Check ``kwargs`` (``audio_lalm``'s model arguments), then load the engine.  ``steer_cfg``: replaces the
        intervention settings parsed from ``kwargs`` (calibration runs parse theirs with ``calibrating=True``)."""
        from audio_tasks.model_args import parse_model_args
        from audio_tasks.placement import single_device
        from audio_tasks.processors import import_fixtures
        from audio_tasks.reference import model_name
        from interventions.loader import load_engine, reference_model_dir

        kw = dict(kwargs)
        given = kw.pop("pretrained", None)
        opts = parse_model_args(kw)  # every argument checked before anything expensive
        pretrained = str(given) if given else str(reference_model_dir())
        import_fixtures(pretrained)  # offline tiny processors, when a tiny checkpoint names them
        device = single_device(opts.device, asked=opts.device_asked)  # no accelerate state: one process
        engine = load_engine(given or None, revision=opts.revision, device=device,
                             trust_remote_code=opts.trust_remote_code, **opts.load_kwargs)
        cfg = steer_cfg if steer_cfg is not None else opts.steer
        cfg.validate_against(engine.spec.num_layers(engine.model), engine.spec.num_heads(engine.model))
        return cls(engine=engine, pretrained=pretrained, model_name=model_name(given), revision=opts.revision,
                   steer_cfg=cfg, batch_size_per_gpu=opts.batch_size, first_token=opts.first_token,
                   first_token_collisions=opts.first_token_collisions)

    @property
    def model(self) -> Any:
        return self.engine.model

    @property
    def spec(self) -> Any:
        return self.engine.spec

    @property
    def identity(self) -> dict[str, Any]:
        """What makes the loaded model this model (see :func:`interventions.fingerprint.model_fingerprint`)."""
        if self._identity is None:
            from interventions.fingerprint import model_fingerprint

            self._identity = model_fingerprint(self.model, self.spec, self.engine.tokenizer, revision=self.revision)
        return self._identity

    def item_options(self) -> dict[str, Any]:
        """Keyword arguments to :func:`audio_tasks.requests.build_items` (first-token settings, clip cache,
        once-only audio warnings)."""
        return {"first_token": self.first_token, "collisions": self.first_token_collisions,
                "clip_cache": self.clip_cache, "warned": self.warned}
