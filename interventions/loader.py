"""Load an :class:`~interventions.engine.Engine` for a checkpoint, with no lm-eval object.

    from interventions import load_engine
    engine = load_engine()                       # the embedded reference model, on the CPU
    engine = load_engine("Qwen/Qwen2-Audio-7B-Instruct", device="cuda", dtype="bf16")

This is the one model-loading path: ``audio_tasks.model.AudioLALM`` (the lm-eval adapter), the
analyses and the benchmark all go through it.  Per-architecture details come from
:mod:`interventions.specs`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine (torch, transformers) is imported when a model is loaded, not before
    from .engine import Engine

__all__ = ["load_engine", "load_model", "resolve_dtype", "reference_model_dir", "DTYPES"]

DTYPES = ("auto", "float32", "fp32", "float16", "fp16", "half", "bfloat16", "bf16")


def reference_model_dir() -> Path:
    """Folder of the embedded reference checkpoint (shipped as data of the ``audio_tasks`` package).

    Located without importing ``audio_tasks`` (``interventions`` never imports it)."""
    spec = importlib.util.find_spec("audio_tasks")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the audio_tasks package (which holds the embedded reference model) is not "
                                "installed; pass a checkpoint explicitly")
    return Path(list(spec.submodule_search_locations)[0]) / "reference" / "model"


def resolve_dtype(name: Any, device: str):
    """torch dtype for ``name`` (one of :data:`DTYPES` or a torch.dtype); ``auto``: bf16 on CUDA, else fp32."""
    import torch

    if name in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(name, torch.dtype):
        return name
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if str(name) not in table:
        raise ValueError(f"dtype={name!r}; valid: {', '.join(DTYPES)}")
    return table[str(name)]


def load_model(pretrained: str, *, revision: str | None = None, dtype: Any = "auto", device: str = "cpu",
               attn_implementation: str | None = None, trust_remote_code: bool = False, parallelize: bool = False,
               random_weights: bool = False):
    """Load (model, processor, spec) for any architecture with a spec.

    ``random_weights``: build the model from the checkpoint's config with freshly initialised weights, directly
    on ``device`` (the benchmark's sizes; ``device="meta"`` counts parameters without memory); no weights file
    is read."""
    if random_weights and parallelize:
        raise ValueError("random_weights=True builds the model on one device; it does not take parallelize=True")
    import transformers
    from transformers import AutoConfig, AutoProcessor

    from .specs import spec_for_config

    config = AutoConfig.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    spec = spec_for_config(config)
    if spec.not_run_reason:
        raise NotImplementedError(f"{spec.name} ({pretrained}): {spec.not_run_reason}")
    from . import processors as _processors

    # a clear error naming a missing extra (mistral-common for Voxtral, torchvision for Qwen2.5-Omni)
    _processors.prepare(pretrained, getattr(config, "model_type", None))
    for mod in spec.processor_imports:  # offline processor classes a checkpoint may name (data in the spec)
        importlib.import_module(mod)
    cls = getattr(transformers, spec.model_class)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code,
                              "dtype": resolve_dtype(dtype, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = (json.loads(attn_implementation) if str(attn_implementation).startswith("{")
                                         else {spec.text_config: attn_implementation})
    if parallelize:
        kwargs["device_map"] = "auto"
    from .arch_extras import stub_towers

    with stub_towers(spec, config):  # towers the spec never runs are not built (ArchSpec.stub_sub_configs)
        if random_weights:
            import torch

            kwargs.pop("revision")
            kwargs.pop("trust_remote_code")
            with torch.device(device):
                model = cls._from_config(config, **kwargs)
        else:
            model = cls.from_pretrained(pretrained, **kwargs)
    if not parallelize:
        model.to(device)
    model.eval()
    processor = _processors.adapt(  # a real VoxtralProcessor is wrapped to tokenize through mistral-common
        AutoProcessor.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code))
    tok = getattr(processor, "tokenizer", None)
    if tok is not None and not isinstance(processor, _processors.MistralVoxtralProcessor):
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    return model, processor, spec


def load_engine(pretrained: str | Path | None = None, *, revision: str | None = None, dtype: Any = "auto",
                device: str | None = None, attn_implementation: str | None = None, trust_remote_code: bool = False,
                parallelize: bool = False, encoder_cache_bytes: int | None = None,
                prefix_cache_bytes: int | None = None, random_weights: bool = False) -> Engine:
    """The :class:`Engine` for ``pretrained`` (default: the embedded reference model).

    ``device`` None: CUDA when available, else the CPU.  ``encoder_cache_bytes`` / ``prefix_cache_bytes``: byte
    budgets of the engine's encoder and prefix-KV caches (None: the defaults,
    :data:`~interventions.engine.DEFAULT_ENCODER_CACHE_BYTES` / ``DEFAULT_PREFIX_CACHE_BYTES``).
    ``random_weights``: the checkpoint's architecture with random weights (see :func:`load_model`).  Raises
    ``FileNotFoundError`` when no checkpoint is given and the reference model is missing, ``ValueError`` for an
    unknown ``dtype`` or a negative budget (before loading)."""
    import torch

    from .engine import Engine

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolve_dtype(dtype, device)  # a bad dtype fails before anything is loaded
    budgets: dict[str, int] = {}
    for name, v in (("encoder_cache_bytes", encoder_cache_bytes), ("prefix_cache_bytes", prefix_cache_bytes)):
        if v is not None:
            if int(v) < 0:
                raise ValueError(f"{name}={v!r}; valid: a number of bytes >= 0, or None (the default)")
            budgets[name] = int(v)
    if not pretrained:
        ref = reference_model_dir()
        if not (ref / "config.json").exists():
            raise FileNotFoundError(f"no pretrained given and the embedded reference model is missing at {ref}")
        pretrained = ref
    model, processor, spec = load_model(str(pretrained), revision=revision, dtype=dtype, device=str(device),
                                        attn_implementation=attn_implementation,
                                        trust_remote_code=trust_remote_code, parallelize=parallelize,
                                        random_weights=random_weights)
    return Engine(model, processor, spec, **budgets)
