"""interventions.load_engine + audio_tasks.requests.build_items: scoring with no lm-eval model object."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance

from tests.helpers import make_waves

DOC = {"user_prompt": "What is the gender of the speaker in the speech? Possible options: male, female.",
       "assistant_prefix": "The speaker's gender is"}
CONTS = [" male", " female", " male voice with many tokens"]


def test_load_engine_scores_items_without_lm_eval_model(tiny_qwen2_audio_dir):
    from audio_tasks.requests import build_items
    from interventions import load_engine
    from interventions.scoring import score_items

    engine = load_engine(tiny_qwen2_audio_dir, device="cpu")
    waves = make_waves(3, seed=7)
    reqs = [Instance("loglikelihood", dict(DOC), ("ctx", c, {"audio": [{"array": w, "sampling_rate": 16000}]}),
                     j, ("t", d, 1)) for d, w in enumerate(waves) for j, c in enumerate(CONTS)]
    items = build_items(engine, reqs)
    assert len(items) == 3 and all(len(it.continuations) == 3 for it in items)
    assert all(it.meta["prompt"].endswith(DOC["assistant_prefix"]) for it in items)
    scores = score_items(engine, items)
    p, model = engine.processor, engine.model
    for it, sc, w in zip(items, scores, waves):
        for j, cont in enumerate(CONTS):
            # Independent reference: the full HF model (its own audio encoder and merge) on prompt+continuation.
            full = p(text=[it.meta["prompt"] + cont], audio=[w], sampling_rate=16000,
                     return_tensors="pt")
            ctx = p(text=[it.meta["prompt"]], audio=[w], sampling_rate=16000, return_tensors="pt")
            n = ctx["input_ids"].shape[1]
            with torch.no_grad():
                lp = torch.log_softmax(model(**full).logits[0].float(), -1)
            ids = full["input_ids"][0]
            ref = [lp[k - 1, ids[k]].item() for k in range(n, ids.shape[0])]
            assert abs(sc.loglik[j] - sum(ref)) < 1e-4
            assert abs(sc.first[j] - ref[0]) < 1e-4


def test_load_engine_defaults_to_reference_model_and_checks_dtype():
    from interventions.loader import load_engine, reference_model_dir

    with pytest.raises(ValueError, match="dtype='fp8'; valid: auto, float32"):
        load_engine(device="cpu", dtype="fp8")
    if not (reference_model_dir() / "config.json").exists():
        pytest.skip("embedded reference model missing")
    from audio_tasks.model import REFERENCE_MODEL_DIR

    assert reference_model_dir() == REFERENCE_MODEL_DIR
    engine = load_engine(device="cpu")
    assert engine.num_layers == engine.spec.num_layers(engine.model) > 0


def test_load_engine_random_weights_keeps_the_architecture_not_the_weights(tiny_qwen2_audio_dir):
    """random_weights=True (the benchmark's path): the checkpoint's architecture and dtype, freshly drawn weights
    (none read from the file), on the requested device; the meta device holds no memory."""
    from interventions import load_engine

    saved = dict(load_engine(tiny_qwen2_audio_dir, device="cpu", dtype="fp32").model.named_parameters())
    torch.manual_seed(123)
    params = dict(load_engine(tiny_qwen2_audio_dir, device="cpu", dtype="bf16",
                              random_weights=True).model.named_parameters())
    assert len(saved) > 10 and {n: tuple(p.shape) for n, p in params.items()} == {n: tuple(p.shape)
                                                                                  for n, p in saved.items()}
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    varied = [n for n, p in saved.items() if p.std() > 0]
    assert varied and not any(torch.equal(params[n].float(), saved[n].to(torch.bfloat16).float()) for n in varied)
    meta = load_engine(tiny_qwen2_audio_dir, device="meta", random_weights=True)
    assert all(p.is_meta for p in meta.model.parameters())
    assert sum(p.numel() for p in meta.model.parameters()) == sum(p.numel() for p in saved.values())
    with pytest.raises(ValueError, match="random_weights=True .* parallelize"):
        load_engine(tiny_qwen2_audio_dir, device="cpu", random_weights=True, parallelize=True)
