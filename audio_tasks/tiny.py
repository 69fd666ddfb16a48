"""Tiny offline models: ``python -m audio_tasks.tiny --arch ARCH --out DIR`` (the dispatch and command line).

Writes a ``from_pretrained``-loadable directory (random weights, a few layers, an offline-built
byte-level BPE tokenizer holding every special token the chat template and processor need, the
feature extractor and the processor).  Tests, CI, docs and anyone without a GPU use these.  The builders live in
:mod:`audio_tasks.tiny_core` (Qwen2-Audio, Voxtral, Qwen2.5-Omni and the shared helpers) and
:mod:`audio_tasks.tiny_more` (issue #15's architectures); this module imports both and neither imports it.

``--vocab real`` writes a twin of the published checkpoint instead (real vocabulary, special-token ids,
chat template, processor class; tiny random weights): see :mod:`audio_tasks.twins`.

Voxtral and Qwen2.5-Omni use processors defined in :mod:`audio_tasks.tiny_core` (``TinyVoxtralProcessor``,
``TinyQwen2_5OmniProcessor``) and registered with transformers' ``AutoProcessor`` when it is imported; the loader
(``audio_tasks.processors.prepare``) imports this module when a checkpoint names one of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from audio_tasks.tiny_core import (  # noqa: F401  (re-exported: the names other modules and tests import from here)
    QWEN2_5_OMNI_CHAT_TEMPLATE,
    QWEN2_5_OMNI_TOKEN_ATTRS,
    QWEN2_AUDIO_CHAT_TEMPLATE,
    TinyQwen2_5OmniProcessor,
    TinyVoxtralProcessor,
    _save,
    build_tokenizer,
    make_qwen2_audio,
    tiny_qwen2_5_omni,
    tiny_qwen2_audio,
    tiny_voxtral,
)
from audio_tasks.tiny_more import BUILDERS_MORE
from audio_tasks.twins import TWIN_BUILDERS

BUILDERS: dict[str, Callable[..., Path]] = {"qwen2_audio": tiny_qwen2_audio, "voxtral": tiny_voxtral,
                                            "qwen2_5_omni": tiny_qwen2_5_omni, **BUILDERS_MORE}
VOCABS = ("tiny", "real")


def build(arch: str, out: Path, vocab: str = "tiny", **kw) -> Path:
    """Build the tiny checkpoint of ``arch`` with vocabulary ``vocab`` under ``out``; return its path."""
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocab {vocab!r}; valid: {', '.join(VOCABS)}")
    table: dict[str, Callable[..., Path]] = BUILDERS if vocab == "tiny" else TWIN_BUILDERS
    if arch not in table:
        raise ValueError(f"unknown arch {arch!r} for --vocab {vocab}; valid: {', '.join(sorted(table))}")
    return table[arch](Path(out), **kw)


def main(argv: list[str] | None = None) -> int:
    """Command line: build a tiny checkpoint; return the exit code."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", required=True, help="one of: " + ", ".join(sorted(BUILDERS)))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: 4 tiny, 2 real)")
    p.add_argument("--vocab", default="tiny", choices=VOCABS,
                   help="tiny: 600-token offline BPE (fast, default); real: the checkpoint's real vocabulary, "
                        "special tokens, chat template and processor (a 'twin', see audio_tasks/twins.py)")
    a = p.parse_args(argv)
    kw = {"seed": a.seed}
    if a.layers is not None:
        kw["layers"] = a.layers
    path = build(a.arch, Path(a.out), vocab=a.vocab, **kw)
    print(json.dumps({"arch": a.arch, "vocab": a.vocab, "path": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
