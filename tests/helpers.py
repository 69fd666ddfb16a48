"""Helpers shared by the test modules (fixtures live in tests/conftest.py): test waveforms, the SAKURA sample and
the analysis command line, the tiny-model requests and their full-forward reference, lm-eval samples files, and
the real lm-eval output folders the leaderboard and regression-gate tests read."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from filelock import FileLock
from lm_eval.api.instance import Instance


def make_waves(n: int, seed: int = 0, sr: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(sr * (0.6 + 0.25 * i)))).astype(np.float32) for i in range(n)]


REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SAKURA_SAMPLE_ROOT") or REPO.parent / "shared" / "sakura-sample")



def sakura_tasks_available() -> bool:
    try:
        from lm_eval.tasks import TaskManager

        from audio_tasks.tasks import TASKS_DIR

        return "sakura_gender" in TaskManager(include_path=str(TASKS_DIR), include_defaults=False).all_tasks
    except Exception:
        return False


needs_tasks = pytest.mark.skipif(not (SAMPLE / "data" / "Gender").is_dir() or not sakura_tasks_available(),
                                 reason="SAKURA sample or the sakura_* lm-eval tasks are not available")


def analysis_args(cmd, model_dir, out, *extra, limit=6):
    return [cmd, "--model_args", f"pretrained={model_dir},dtype=float32", "--tasks", "sakura_gender",
            "--metadata", json.dumps({"data_root": str(SAMPLE)}), "--limit", str(limit), "--out", str(out),
            "--no_progress", *extra]


SR = 16000
PROMPTS = [
    {"user_prompt": "What is the gender of the speaker in the speech? Possible options: male, female.",
     "assistant_prefix": "The speaker's gender is"},
    {"user_prompt": "", "assistant_prefix": "The speaker's gender is"},  # P1: audio only
]
SINGLE = [" male", " female"]
MULTI = [" male voice with many tokens"]


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(0.1 * rng.standard_normal(int(SR * s))).astype(np.float32) for s in (1.1, 2.45)]


CLIPS = _clips()
# (prompt, clip) per doc: 3 docs, 2 distinct clips, both prompts.
DOCS = [(0, 0), (0, 1), (1, 0)]


def tiny_requests(conts: list[str], task: str = "tiny") -> list[Instance]:
    reqs = []
    for d, (p, c) in enumerate(DOCS):
        doc = {**PROMPTS[p], "doc_id": str(d)}
        aux = {"audio": [{"array": CLIPS[c], "sampling_rate": SR}]}  # shared by the doc's choices, as in lm-eval
        for j, cont in enumerate(conts):
            reqs.append(Instance("loglikelihood", doc, ("ctx", cont, aux), j, (task, d, 1)))
    return reqs


def full_forward_reference(lm, prompt: str, wave: np.ndarray, cont: str, ctx_ids: torch.Tensor):
    """Sum / first / greedy of the continuation's log-probs from the model's own full forward."""
    full = lm.processor(text=[prompt + cont], audio=[wave], sampling_rate=SR, return_tensors="pt")
    n = ctx_ids.shape[0]
    ids = full["input_ids"][0]
    assert torch.equal(ids[:n], ctx_ids), "continuation boundary must not merge tokens"
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(**full).logits[0].float(), -1)
    toks = [lp[k - 1, ids[k]].item() for k in range(n, ids.shape[0])]
    greedy = all(int(lp[k - 1].argmax()) == int(ids[k]) for k in range(n, ids.shape[0]))
    return sum(toks), toks[0], greedy


def read_samples(out: Path, task: str):
    files = glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True)
    assert files, f"no samples for {task} under {out}"
    return [json.loads(l) for l in open(files[0])]


SAKURA = ["sakura_gender", "sakura_language", "sakura_emotion", "sakura_animal"]
MMAU = ["mmau_sound", "mmau_music", "mmau_speech"]
N_DOCS = 30


# ---------------------------------------------------------------------------------------------------------
# real lm-eval output
# ---------------------------------------------------------------------------------------------------------


def _doc_ids(task: str, n: int = N_DOCS) -> list[str]:
    return [f"{task}-clip{i:03d}.wav" for i in range(n)]


def base_pattern(task: str, n: int = N_DOCS) -> dict[str, bool]:
    """Deterministic baseline correctness: roughly 2/3 correct, different per task."""
    off = sum(map(ord, task)) % 3
    return {d: (i + off) % 3 != 0 for i, d in enumerate(_doc_ids(task, n))}


def flip(pattern: dict[str, bool], down: int = 0, up: int = 0) -> dict[str, bool]:
    """Copy of ``pattern`` with the first ``down`` correct docs made wrong and the first ``up`` wrong docs right."""
    out = dict(pattern)
    for d in [d for d, c in pattern.items() if c][:down]:
        out[d] = False
    for d in [d for d, c in pattern.items() if not c][:up]:
        out[d] = True
    return out


def make_lm(correct: dict[str, dict[str, bool]]) -> Any:
    from lm_eval.api.model import LM

    class ScriptedLM(LM):
        """Gives the highest log-likelihood to the gold choice iff the doc is scripted as correct."""

        def loglikelihood(self, requests):  # type: ignore[override]
            out = []
            for req in requests:
                doc = req.doc
                ok = correct[doc["task"]][doc["doc_id"]]
                pred = doc["gold"] if ok else (doc["gold"] + 1) % len(doc["choices"])
                out.append((0.0 if req.idx == pred else -2.0, req.idx == pred))
            return out

        def loglikelihood_rolling(self, requests):  # type: ignore[override]
            raise NotImplementedError

        def generate_until(self, requests):  # type: ignore[override]
            raise NotImplementedError

    return ScriptedLM()


def lmeval_run(work: Path, out_dir: Path, model_args: str, correct: dict[str, dict[str, bool]]) -> Path:
    """Evaluate ``correct`` (task -> doc_id -> correct?) with lm-eval and save it under ``out_dir``."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    work.mkdir(parents=True, exist_ok=True)
    for task, pattern in correct.items():
        data = work / f"{task}.jsonl"
        rows = [{"doc_id": d, "task": task, "user_prompt": f"question {i}", "choices": ["male", "female", "other"],
                 "gold": i % 3, "label": "x"} for i, d in enumerate(pattern)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (work / f"{task}.yaml").write_text(
            f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"  cache_dir: {work / 'hf_cache'}\ntest_split: test\noutput_type: multiple_choice\n"
            'doc_to_text: "{{user_prompt}}"\ndoc_to_choice: choices\ndoc_to_target: gold\n'
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
        )
    tracker = EvaluationTracker(output_path=str(out_dir))
    # torch's environment report shells out a dozen times (~1 s/run); its text is irrelevant here
    with mock.patch("torch.utils.collect_env.get_pretty_env_info", return_value="(stubbed in tests)"):
        results = simple_evaluate(
            model=make_lm(correct), model_args=model_args, tasks=sorted(correct), log_samples=True,
            evaluation_tracker=tracker, bootstrap_iters=0,
            task_manager=TaskManager(include_path=str(work), include_defaults=False),
        )
    assert results is not None
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    return out_dir


SCENARIOS: dict[str, tuple[str, dict[str, dict[str, bool]]]] = {}


def _scenarios() -> dict[str, tuple[str, dict[str, dict[str, bool]]]]:
    base = {t: base_pattern(t) for t in SAKURA + MMAU}
    noise = {t: flip(p, down=2, up=2) for t, p in base.items()}
    drop = dict(base)
    drop["sakura_gender"] = flip(base["sakura_gender"], down=12)  # b10=12, b01=0 -> p = 2 * 0.5**12
    drop["mmau_music"] = flip(base["mmau_music"], down=1, up=3)
    mismatch = dict(base)
    mismatch["mmau_sound"] = {d: c for d, c in base["mmau_sound"].items() if not d.endswith("clip007.wav")}
    return {
        "base": ("pretrained=org/tiny-a,dtype=float32,steer=none", base),
        "noise": ("pretrained=org/tiny-a,dtype=float32,steer=caa,alpha=1", noise),
        "drop": ("pretrained=org/tiny-a,dtype=float32,steer=caa,alpha=4", drop),
        "mismatch": ("pretrained=org/tiny-a,dtype=float32,steer=caa,alpha=8", mismatch),
        "nobase": ("pretrained=org/tiny-b,steer=caa,alpha=4", {t: base[t] for t in SAKURA[:2]}),
    }


_CACHE: dict[str, Path] = {}


def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One lm-eval ``--output_path`` folder per scenario, generated once per session (shared by xdist workers)."""
    if not _CACHE:
        SCENARIOS.update(_scenarios())
        base = tmp_path_factory.getbasetemp()
        root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "lmeval_runs"
        with FileLock(str(root) + ".lock"):
            if not (root / "DONE").exists():
                shutil.rmtree(root, ignore_errors=True)
                for name, (args, correct) in SCENARIOS.items():
                    lmeval_run(root / "work" / name, root / name, args, correct)
                (root / "DONE").touch()
        _CACHE.update({name: root / name for name in SCENARIOS})
    return _CACHE


def processor_full_forward(lm, prompt, wave, cont):
    """Sum of continuation log-probs from the full model forward on prompt+continuation."""
    p = lm.processor
    full = p(text=[prompt + cont], audio=[wave], sampling_rate=16000, return_tensors="pt")
    ctx = p(text=[prompt], audio=[wave], sampling_rate=16000, return_tensors="pt")
    n = ctx["input_ids"].shape[1]
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(**full).logits[0].float(), -1)
    ids = full["input_ids"][0]
    toks = [lp[k - 1, ids[k]].item() for k in range(n, ids.shape[0])]
    return sum(toks), toks[0], all(int(lp[k - 1].argmax()) == int(ids[k]) for k in range(n, ids.shape[0]))
