"""Shared fixtures: tiny offline models (built once per session) and the real SAKURA sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_qwen2_audio_dir(tmp_path_factory) -> Path:
    from audio_tasks.tiny import build

    return build("qwen2_audio", tmp_path_factory.mktemp("tiny_qwen2_audio"))


@pytest.fixture(scope="session")
def sakura_sample_root() -> Path:
    root = Path(os.environ.get("SAKURA_SAMPLE_ROOT", REPO.parent / "shared" / "sakura-sample"))
    if not (root / "data" / "Gender" / "metadata.csv").exists():
        pytest.skip(f"real SAKURA sample not found at {root} (set SAKURA_SAMPLE_ROOT)")
    return root


@pytest.fixture(scope="session")
def tiny_lm(tiny_qwen2_audio_dir):
    from audio_tasks.model import AudioLALM

    return AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run several times faster single-threaded on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
