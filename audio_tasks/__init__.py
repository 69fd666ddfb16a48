"""lm-evaluation-harness tasks and the ``audio_lalm`` model for large audio-language models."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("audio-lalm-lab")  # the installed distribution's version (pyproject.toml)
except PackageNotFoundError:  # pragma: no cover - run from a source tree that is not installed
    __version__ = "0+unknown"
