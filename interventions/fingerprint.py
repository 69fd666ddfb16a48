"""What makes a loaded model *that* model: the identity recorded in calibration artifacts and in the
``--use_cache`` guard, and checked on load.

The folder name is not an identity (two different checkpoints can both live in a folder called ``model``).
The fingerprint holds the architecture, the sizes, a hash of the vocabulary, the revision, the dtype and a
hash of every weight tensor's evenly strided sample (1,024 values each, so it is cheap even for a 7B model).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["model_fingerprint", "fingerprint_mismatch", "IDENTITY_KEYS"]

# Compared on load; ``dtype`` joins them (an artifact or cache made in bf16 is not one made in fp32).
IDENTITY_KEYS = ("architecture", "model_type", "num_layers", "num_heads", "hidden_size", "vocab_size", "vocab_hash",
                 "revision", "weights", "dtype")
_SAMPLE = 1024  # elements hashed per tensor


def _tensor_digest(t: torch.Tensor) -> str:
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // _SAMPLE)
    sample = flat[::step][:_SAMPLE].to("cpu", torch.float32).contiguous()
    return hashlib.sha256(sample.numpy().tobytes() + str(tuple(t.shape)).encode()).hexdigest()


def _vocab_hash(tokenizer: Any) -> str | None:
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # pragma: no cover - tokenizers without get_vocab
        return None
    items = sorted((str(k), int(v)) for k, v in vocab.items())
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module, spec: Any, tokenizer: Any, *,
                      revision: str | None = None) -> dict[str, Any]:
    """Identity of a loaded model (see the module docstring); JSON-able."""
    cfg = spec.text_cfg(model) if hasattr(spec, "text_cfg") else model.config
    params = [(n, p) for n, p in model.named_parameters()]
    h = hashlib.sha256()
    for name, p in params:  # a strided sample of every tensor: milliseconds, yet any re-trained tensor shows
        h.update(name.encode() + b"\0" + _tensor_digest(p).encode())
    emb = spec.embed_module(model).weight if hasattr(spec, "embed_module") else None
    if emb is not None:
        h.update(b"embed\0" + _tensor_digest(emb).encode())
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return {"architecture": str(archs[0]), "model_type": str(getattr(model.config, "model_type", "")),
            "num_layers": int(spec.num_layers(model)), "num_heads": int(spec.num_heads(model)),
            "hidden_size": int(getattr(cfg, "hidden_size", 0) or 0),
            "vocab_size": int(getattr(cfg, "vocab_size", 0) or 0),
            "vocab_hash": _vocab_hash(tokenizer), "revision": revision, "weights": h.hexdigest()[:24],
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "") if params else None}


def fingerprint_mismatch(theirs: dict[str, Any] | None, mine: dict[str, Any]) -> list[str]:
    """The identity fields in which two fingerprints differ (empty: the same model)."""
    theirs = theirs or {}
    return [k for k in IDENTITY_KEYS if theirs.get(k) != mine.get(k)]
