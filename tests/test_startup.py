"""The start-up hook: lazy registration with lm-eval, no torch at start, built-ins kept, switchable off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = """
import json, sys
started_with_torch = 'torch' in sys.modules
import lm_eval.api.registry as r
after_registry_import = 'torch' in sys.modules
from lm_eval.api.registry import get_model
names = {}
for n in ('audio_lalm', 'hf'):
    try:
        names[n] = get_model(n).__name__
    except Exception as e:
        names[n] = 'ERR'
from lm_eval.tasks import TaskManager
tm = TaskManager()
print(json.dumps({'torch_at_start': started_with_torch, 'torch_after_registry': after_registry_import,
                  'models': names, 'has_sakura': 'sakura_gender' in tm.all_tasks}))
"""


def _run(env_extra):
    env = {**os.environ, **env_extra}
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_autoregistration_keeps_builtins_and_imports_no_torch_at_start():
    r = _run({})
    assert r["torch_at_start"] is False and r["torch_after_registry"] is False
    assert r["models"] == {"audio_lalm": "AudioLALM", "hf": "HFLM"}
    assert r["has_sakura"] is True


def test_autoregistration_can_be_switched_off():
    r = _run({"AUDIO_LALM_NO_AUTOREGISTER": "1"})
    assert r["models"]["audio_lalm"] == "ERR" and r["models"]["hf"] == "HFLM"
    assert r["has_sakura"] is False
