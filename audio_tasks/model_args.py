"""The ``audio_lalm`` model arguments and their validation.

``LOAD_ARGS`` select, load or run the model; ``STEER_KEYS`` configure an intervention; ``MODEL_ARGS`` is
every argument ``AudioLALM`` accepts.  ``analysis.results_io.NON_INTERVENTION_KEYS`` is derived from here.
Importing this module is cheap (result readers need not import the model); :func:`parse_model_args` checks
every argument, naming it and its valid values, before anything expensive is loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Mapping

from interventions.config import STEER_KEYS, SteerConfig

__all__ = ["LOAD_ARGS", "STEER_KEYS", "MODEL_ARGS", "ModelOptions", "parse_model_args", "as_bool",
           "merge_cli_args"]

LOAD_ARGS = ("pretrained", "revision", "dtype", "device", "batch_size", "max_batch_size", "attn_implementation",
             "trust_remote_code", "parallelize", "max_gen_toks", "max_length", "share_prefix", "first_token",
             "first_token_collisions", "prep_workers")
MODEL_ARGS = LOAD_ARGS + STEER_KEYS
DEVICE_IS_DEFAULT = "_device_is_default"  # set by merge_cli_args: the device is lm-eval's CLI default


def as_bool(v: Any) -> bool:
    """A boolean model argument (``1/true/yes/on``, any case, are true)."""
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class ModelOptions:
    """The checked ``audio_lalm`` arguments (everything but loading the model)."""
    steer: SteerConfig
    steer_args: dict[str, Any]  # the intervention arguments as given
    device: str | None
    device_asked: bool  # the user asked for the device (model_args or --device), not lm-eval's CLI default
    revision: str | None
    trust_remote_code: bool
    auto_batch: bool
    max_batch_size: int
    batch_size: int
    max_gen_toks: int
    max_length: int | None
    share_prefix: str  # auto | true | false
    prep_workers: int
    first_token: str
    first_token_collisions: str
    load_kwargs: dict[str, Any]  # passed to interventions.loader.load_engine (dtype, attention, parallelize)


def _pos_int(kwargs: Mapping[str, Any], name: str, default: Any) -> int:
    from interventions.config import _int

    v = _int(default if kwargs.get(name) in (None, "") else kwargs[name], name)
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def _choice(kwargs: Mapping[str, Any], name: str, default: str, valid: tuple[str, ...]) -> str:
    v = str(kwargs.get(name, default)).strip().lower()
    if v not in valid:
        raise ValueError(f"{name}={kwargs[name]!r}; valid: {', '.join(valid)}")
    return v


def parse_model_args(kwargs: dict[str, Any]) -> ModelOptions:
    """Check ``AudioLALM``'s keyword arguments (all but ``pretrained``); a ``ValueError`` naming the argument
    and its valid values otherwise."""
    from audio_tasks.first_tokens import COLLISION_POLICIES, FIRST_TOKEN_MODES
    from audio_tasks.pipeline import parse_workers

    kwargs = dict(kwargs)
    device_asked = not kwargs.pop(DEVICE_IS_DEFAULT, False)
    unknown = sorted(set(kwargs) - set(MODEL_ARGS))
    if unknown:
        raise ValueError(f"audio_lalm: unknown model argument(s) {unknown}; valid: {', '.join(MODEL_ARGS)}")
    steer = SteerConfig.from_kwargs(kwargs)  # intervention arguments first
    auto_batch = str(kwargs.get("batch_size", 1)).startswith("auto")
    max_batch_size = _pos_int(kwargs, "max_batch_size", 64)
    batch_size = max_batch_size if auto_batch else _pos_int(kwargs, "batch_size", 1)
    max_gen_toks = _pos_int(kwargs, "max_gen_toks", 256)
    max_length = _pos_int(kwargs, "max_length", None) if kwargs.get("max_length") else None
    share_prefix = str(kwargs.get("share_prefix", "auto")).strip().lower()
    if share_prefix not in ("auto", "true", "false"):
        raise ValueError(f"share_prefix={kwargs['share_prefix']!r}; valid: auto, true, false")
    prep_workers = parse_workers(kwargs.get("prep_workers"))
    return ModelOptions(
        steer=steer, steer_args={k: v for k, v in kwargs.items() if k in STEER_KEYS}, device=kwargs.get("device"),
        device_asked=device_asked, revision=kwargs.get("revision"),
        trust_remote_code=as_bool(kwargs.get("trust_remote_code", False)), auto_batch=auto_batch,
        max_batch_size=max_batch_size, batch_size=batch_size, max_gen_toks=max_gen_toks, max_length=max_length,
        share_prefix=share_prefix, prep_workers=prep_workers,
        first_token=_choice(kwargs, "first_token", "in_context", FIRST_TOKEN_MODES),
        first_token_collisions=_choice(kwargs, "first_token_collisions", "auto", COLLISION_POLICIES),
        load_kwargs={"dtype": kwargs.get("dtype", "auto"), "attn_implementation": kwargs.get("attn_implementation"),
                     "parallelize": as_bool(kwargs.get("parallelize", False))})


def merge_cli_args(args: Mapping[str, Any], additional_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``model_args`` over lm-eval's CLI defaults (``additional_config``: batch_size, device, ...); marks a
    device that only lm-eval's default named (its CPU fallback is then logged at INFO, not WARNING)."""
    extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
    if "device" not in args and "device" in extra and not any(a == "--device" or a.startswith("--device=")
                                                               for a in sys.argv):
        extra[DEVICE_IS_DEFAULT] = True
    return {**extra, **args}  # explicit model_args win over lm-eval's CLI defaults
