"""audio_tasks.model: a thin lm-eval adapter built on lm-eval's own pieces (TemplateLM's continuation split,
Collator's ordering), and no module-level state written at run time anywhere in audio_tasks/."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from lm_eval.api.instance import Instance

from tests.helpers import processor_full_forward

REPO = Path(__file__).resolve().parents[1]


def test_continuation_split_is_template_lms(tiny_lm):
    """TemplateLM._encode_pair (lm-eval's code, on the same tokenizer) is the reference for every pair whose
    context ids prefix the whole string's (where the two splits are defined to agree)."""
    from types import SimpleNamespace

    from lm_eval.api.model import TemplateLM

    from audio_tasks.model import AudioLALM

    assert issubclass(AudioLALM, TemplateLM)
    tok = tiny_lm.tokenizer
    stub = SimpleNamespace(backend="causal", tok_encode=lambda s, **k: list(tok(s, add_special_tokens=False).input_ids))
    prompt = tiny_lm.engine.render_chat("Which animal?", assistant_prefix="It is", n_audio=1)
    checked = 0
    for ctx, cont in [(prompt, " a dog"), (prompt + " ", "cat"), ("The answer is", " male voice"),
                      ("Question: x\nAnswer:", " yes"), (prompt + "  ", "rooster")]:
        ref = TemplateLM._encode_pair(stub, ctx, cont)  # type: ignore[arg-type]
        whole = stub.tok_encode(ctx.rstrip() + ctx[len(ctx.rstrip()):] + cont)
        if whole[: len(ref[0])] != ref[0] or not ref[1]:
            continue
        assert tiny_lm._encode_pair(ctx, cont) == ref
        checked += 1
    assert checked >= 4


def test_collator_orders_batches_and_restores_request_order(tiny_qwen2_audio_dir, monkeypatch):
    """Shuffled requests of different prompt and clip lengths: scored longest first in batches through
    lm-eval's Collator, results back in request order, each equal to its own full-forward reference."""
    import lm_eval.models.utils as lm_utils

    import interventions.scoring as scoring
    from audio_tasks.model import AudioLALM

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=2, share_prefix="false",
                   prep_workers=0)
    rng = np.random.default_rng(5)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (4000, 16000, 9000, 25000, 6000)]
    prompts = ["Gender?", "What is the gender of the speaker in this rather long recording of speech?", "Who?",
               "Name the speaker's gender.", "Is the speaker male or female, judging by the voice alone?"]
    reqs = []
    for d, (w, q) in enumerate(zip(waves, prompts)):
        doc, aux = {"user_prompt": q, "assistant_prefix": "It is"}, {"audio": [{"array": w, "sampling_rate": 16000}]}
        for j, c in enumerate([" male", " female"]):
            reqs.append(Instance("loglikelihood", doc, ("ctx", c, aux), j, ("t", d, 1)))
    random.Random(3).shuffle(reqs)
    made, seen = [], []
    real_collator, real_score = lm_utils.Collator, scoring.score_items

    class SpyCollator(real_collator):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    def spy(engine, items, intervention=None, **kw):
        seen.append([int(it.tok.input_ids.shape[0]) for it in items])
        return real_score(engine, items, intervention, **kw)

    monkeypatch.setattr(lm_utils, "Collator", SpyCollator)
    monkeypatch.setattr(scoring, "score_items", spy)
    res = lm.loglikelihood(reqs)
    lengths = [n for batch in seen for n in batch]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) == 5  # longest first, 5 lengths
    assert max(len(b) for b in seen) == 2
    # lm-eval's Collator ordered the batch walk, and the docs' order as requested was not their length order
    assert len(made) == 1 and sorted(made[0]._reorder_indices) == list(range(5))
    assert made[0]._reorder_indices != list(range(5))
    for r, (ll, greedy) in zip(reqs, res):
        ref, _, ref_greedy = processor_full_forward(lm, r.args[2]["rendered_prompt"], waves[r.doc_id], r.args[1])
        assert abs(float(ll) - ref) < 1e-4 and greedy == ref_greedy


# ---- no module-level mutable state written at run time --------------------------------------------------------

_MUTATORS = {"append", "add", "update", "setdefault", "pop", "popitem", "clear", "extend", "insert", "remove",
             "discard", "move_to_end", "appendleft", "__setitem__"}
_CONTAINERS = {"dict", "list", "set", "OrderedDict", "defaultdict", "deque", "Counter"}


def _is_container(v: ast.expr) -> bool:
    if isinstance(v, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return True
    f = v.func if isinstance(v, ast.Call) else None
    return (isinstance(f, ast.Name) and f.id in _CONTAINERS) or (isinstance(f, ast.Attribute) and f.attr in _CONTAINERS)


def runtime_module_state(source: str) -> list[str]:
    """``global`` statements, and writes inside functions to module-level containers."""
    tree = ast.parse(source)
    names = set()
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) else [])
        if value is not None and _is_container(value):
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(fn):
            line = getattr(n, "lineno", 0)
            if isinstance(n, ast.Global):
                found.append(f"line {line}: global {', '.join(n.names)}")
            targets = n.targets if isinstance(n, (ast.Assign, ast.Delete)) else [n.target] if isinstance(
                n, ast.AugAssign) else []
            for t in targets:
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id in names:
                    found.append(f"line {line}: writes {t.value.id}[...]")
            f = n.func if isinstance(n, ast.Call) else None
            if isinstance(f, ast.Attribute) and f.attr in _MUTATORS and isinstance(f.value, ast.Name) \
                    and f.value.id in names:
                found.append(f"line {line}: {f.value.id}.{f.attr}()")
    return found


def test_the_state_check_catches_the_old_auto_calibration_global():
    old = ('_AUTO_CALIBRATION = {"pending": False}\n\n'
           'def set_auto_calibration(pending):\n    _AUTO_CALIBRATION["pending"] = bool(pending)\n')
    assert runtime_module_state(old) == ['line 4: writes _AUTO_CALIBRATION[...]']
    assert runtime_module_state("_w = False\ndef f():\n    global _w\n    _w = True\n") == ["line 3: global _w"]
    assert runtime_module_state("_s: set = set()\ndef f(p):\n    _s.add(p)\n") == ["line 3: _s.add()"]
    assert runtime_module_state("T = {'a': 1}\ndef f():\n    return T['a']\n") == []


@pytest.mark.parametrize("package", ["audio_tasks", "interventions", "analysis", "benchmarks"])
def test_no_module_writes_module_state_at_run_time(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert len(files) >= 3
    found = {str(f.relative_to(REPO)): runtime_module_state(f.read_text(encoding="utf-8")) for f in files}
    assert {k: v for k, v in found.items() if v} == {}


def test_auto_calibration_default_split_comes_from_the_task_metadata(tiny_lm):
    from audio_tasks.data.registry import auto_calibration_pending
    from audio_tasks.data.splits import split_options

    assert auto_calibration_pending({"steer": "layer_guided", "K": "2"})  # lm-eval: model_args | --metadata
    assert not auto_calibration_pending({"steer": "layer_guided", "calibration": "/some/dir"})
    assert not auto_calibration_pending({"steer": "head", "heads": "2:1", "alpha": "3"})  # explicit
    assert not auto_calibration_pending({"steer": "none"}) and not auto_calibration_pending({})
    assert split_options({"steer": "enrich"})["split"] == "evaluation"
    assert split_options({"steer": "enrich", "split": "all"})["split"] == "all"
    assert split_options({})["split"] == "all"
    assert tiny_lm.task_metadata() == {} and not tiny_lm.interventions.automatic


def test_audio_warnings_are_once_per_owner(caplog):
    from audio_tasks import audio

    owner: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="audio_tasks.audio"):
        for doc in (1, 2):
            audio.warn_if_truncated(16000 * 31, 16000, 30.0, f"doc {doc}", warned=owner)
        audio.warn_if_truncated(16000 * 31, 16000, 30.0, "doc 3", warned=set())  # another run
    assert [("doc 1" in r.getMessage(), "doc 3" in r.getMessage()) for r in caplog.records] == \
        [(True, False), (False, True)]


@pytest.mark.parametrize("policy,task,analysis,refused", [("auto", "sakura_gender", False, True),
                                                         ("auto", "hellaswag", False, False),
                                                         ("auto", "hellaswag", True, True)])
def test_first_token_task_names_are_computed_from_the_task_files(policy, task, analysis, refused):
    from audio_tasks.labels import first_token_tasks, refuses

    names = {line.split(":", 1)[1].strip() for f in (REPO / "audio_tasks" / "tasks").rglob("*.yaml")
             for line in f.read_text().splitlines() if line.startswith("task:")} - {""}  # "" : a group's list
    assert first_token_tasks() == frozenset(names) and "sakura_gender" in names
    assert refuses(policy, task, analysis) is refused


def test_rolling_loglikelihood_matches_the_full_forward(tiny_lm):
    """Text-only rolling scoring (one window here) equals the model's own forward after the prefix token."""
    import torch

    text = "The speaker's gender is male, and the clip is rather short."
    (got,) = tiny_lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0, ("t", 0, 1))])
    ids = [tiny_lm.tokenizer.eos_token_id] + list(tiny_lm.tokenizer(text, add_special_tokens=False).input_ids)
    assert len(ids) < tiny_lm.max_length
    with torch.no_grad():
        lp = torch.log_softmax(tiny_lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert abs(got - sum(lp[k - 1, ids[k]].item() for k in range(1, len(ids)))) < 1e-4
