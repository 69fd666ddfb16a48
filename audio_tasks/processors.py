"""Real processors in the load path (:mod:`interventions.processors`) plus the offline fixtures.

:func:`prepare` additionally imports the tiny fixture processors (``audio_tasks.tiny``) when a local checkpoint
names one, so that ``AutoProcessor`` finds them; everything else lives in :mod:`interventions.processors`.
"""

from __future__ import annotations

from interventions import processors as _real
from interventions.processors import (  # noqa: F401 - re-exported
    EXTRAS,
    VOXTRAL_CHAT_TEMPLATE,
    MistralVoxtralProcessor,
    adapt,
    processor_class_of,
    require_extra,
)

__all__ = ["prepare", "adapt", "MistralVoxtralProcessor", "processor_class_of", "EXTRAS", "VOXTRAL_CHAT_TEMPLATE",
           "require_extra", "import_fixtures"]


def import_fixtures(pretrained: str) -> None:
    """Register the offline tiny processors with ``AutoProcessor`` when ``pretrained`` names one of them."""
    import re
    from pathlib import Path

    pat = re.compile(r'"(?:processor_class|feature_extractor_type)"\s*:\s*"(Tiny\w*)"')  # also in nested dicts
    names = []
    for f in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        p = Path(str(pretrained)) / f
        if p.is_file():
            try:
                names += pat.findall(p.read_text())
            except OSError:
                continue
    if any(n.startswith("Tiny") for n in names):
        import audio_tasks.tiny  # noqa: F401 - registers the offline processors (tiny and tiny_more)


def prepare(pretrained: str, model_type: str | None = None) -> str | None:
    """Before ``AutoProcessor``: import the tiny processor classes if named; check the extras."""
    import_fixtures(pretrained)
    return _real.prepare(pretrained, model_type)
