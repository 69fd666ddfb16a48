"""The project's own CI uses its regression gate: a pinned tiny-model evaluation is compared with a
committed baseline by `python -m analysis.regress` (exit 0 = no regression).

Regenerate the baseline (only when a change in scores is intended):
    python -m audio_tasks.tiny --arch qwen2_audio --out /tmp/tiny_gate
    lm_eval --model audio_lalm --model_args pretrained=/tmp/tiny_gate --tasks sakura_gender,sakura_animal \
        --device cpu --limit 12 --metadata '{"data_root": "../shared/sakura-sample"}' \
        --output_path tests/baselines/regression --log_samples
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASELINE = Path(__file__).parent / "baselines" / "regression"


@pytest.mark.regression
def test_tiny_model_has_not_regressed(tiny_qwen2_audio_dir, sakura_sample_root, tmp_path):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "audio_lalm", "--model_args",
                        f"pretrained={tiny_qwen2_audio_dir}", "--tasks", "sakura_gender,sakura_animal", "--device",
                        "cpu", "--limit", "12", "--metadata", json.dumps({"data_root": str(sakura_sample_root)}),
                        "--output_path", str(tmp_path / "cand"), "--log_samples"],
                       capture_output=True, text=True, env=env, timeout=400)
    assert p.returncode == 0, p.stderr[-2000:]
    junit = tmp_path / "gate.xml"
    g = subprocess.run([sys.executable, "-m", "analysis.regress", "--baseline", str(BASELINE), "--candidate",
                        str(tmp_path / "cand"), "--junit", str(junit)], capture_output=True, text=True, env=env)
    assert g.returncode == 0, g.stdout + g.stderr
    assert junit.exists()
