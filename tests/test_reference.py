"""Behaviour of the committed reference model (audio_tasks/reference/model) on the synthetic demo data.

Each quantity is computed here from first principles (engine forward + hidden states + forward hooks), not
through the analysis modules, so these tests pin the *model*, and the analyses can be checked against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_tasks.model import REFERENCE_MODEL_DIR

pytestmark = pytest.mark.skipif(not (REFERENCE_MODEL_DIR / "config.json").exists(),
                                reason="embedded reference model not present")

N_PER_TRACK = 96  # all evaluation clips of a track
CHANCE = {"gender": 1 / 2, "language": 1 / 8, "emotion": 1 / 5, "animal": 1 / 9}


@pytest.fixture(scope="module")
def lm():
    from audio_tasks.model import AudioLALM

    return AudioLALM(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def data_root():
    from audio_tasks.synthetic import ensure_dataset

    return ensure_dataset()


def _items(lm, root, track: str, n: int = N_PER_TRACK):
    """(tokenized prompts, gold index, label first-token ids) for the first n evaluation clips of a track."""
    from audio_tasks.audio import load_audio
    from audio_tasks.data.sakura import get_track, p3_user_prompt, read_local

    eng = lm.engine
    t = get_track(track)
    prompt = eng.render_chat(p3_user_prompt(track), assistant_prefix=t.prefix)
    n_text = len(eng.encode_text(prompt))
    first = [eng.encode_text(prompt + " " + lab)[n_text] for lab in t.labels]
    rows = [r for r in read_local(track, root, "p3") if r["split"] == "evaluation"][:n]
    toks, gold = [], []
    for r in rows:
        wav = load_audio(r["_audio"], eng.sampling_rate)
        toks.append(eng.tokenize(prompt, [wav]))
        gold.append(next(i for i, lab in enumerate(t.labels)
                         if lab.casefold() == r["attribute_label"].strip().casefold()))
    return toks, np.array(gold), first


@pytest.fixture(scope="module")
def runs(lm, data_root):
    """Per track: clean hidden states, clean/silence gold probabilities, predictions."""
    eng = lm.engine
    out = {}
    with torch.no_grad():
        for track in ("gender", "language"):
            toks, gold, first = _items(lm, data_root, track)
            prep = eng.prepare(toks)
            res = eng.run(prep, output_hidden_states=True)
            hs = res.hidden_states
            L = len(hs) - 1
            lens = np.stack([eng.lens_logits(hs, l, (slice(None), -1))[:, first].log_softmax(-1).numpy()
                             for l in range(1, L + 1)], 1)  # (N, L, C) over the label set
            logits = eng.unembed(hs[-1][:, -1])
            p_clean = logits.softmax(-1)[:, first].numpy()
            sprep = eng.prepare(toks, silence=True)
            sl = eng.unembed(eng.run(sprep).last_hidden_state[:, -1])
            p_sil = sl.softmax(-1)[:, first].numpy()
            out[track] = {"toks": toks, "gold": gold, "first": first, "prep": prep, "sprep": sprep,
                          "lens": lens, "pred": lens[:, -1].argmax(-1), "p_clean": p_clean, "p_sil": p_sil}
    return out


def test_training_report_present():
    rep = json.loads((REFERENCE_MODEL_DIR / "training_report.json").read_text())
    assert rep["seed"] == 0 and rep["steps"] > 0
    assert set(rep["eval_first_token_accuracy"]) == set(CHANCE)


@pytest.mark.parametrize("track", ["gender", "language"])
def test_first_token_accuracy_well_above_chance(runs, track):
    """'Well above chance' = at least twice chance and a one-sided binomial p < 1e-3 against chance."""
    from scipy.stats import binomtest

    r = runs[track]
    k, n = int((r["pred"] == r["gold"]).sum()), len(r["gold"])
    acc = k / n
    assert acc >= 2 * CHANCE[track], f"{track}: first-token accuracy {acc:.3f} (chance {CHANCE[track]:.3f})"
    assert binomtest(k, n, CHANCE[track], alternative="greater").pvalue < 1e-3


def test_some_track_is_measurably_weaker(lm):
    """Interventions need something to fix: a track well below gender on the evaluation split."""
    rep = json.loads((Path(lm.pretrained) / "training_report.json").read_text())["eval_first_token_accuracy"]
    assert min(rep["emotion"], rep["animal"], rep["language"]) < rep["gender"] - 0.3, rep


@pytest.mark.parametrize("track", ["gender", "language"])
def test_lens_information_rises_with_depth(runs, track):
    r = runs[track]
    correct = r["pred"] == r["gold"]
    assert correct.sum() >= 5
    info = (r["lens"][correct].argmax(-1) == r["gold"][correct, None]).mean(0)  # (L,) Eq. 2 on correct items
    assert info[-1] == 1.0  # by definition of "correct"
    assert info[-1] > info[0], f"{track}: information score per layer {info.round(3).tolist()}"


@pytest.mark.parametrize("track", ["gender", "language"])
def test_silence_lowers_gold_probability(runs, track):
    r = runs[track]
    idx = np.arange(len(r["gold"]))
    pc, ps = r["p_clean"][idx, r["gold"]], r["p_sil"][idx, r["gold"]]
    assert pc.mean() > ps.mean(), f"{track}: mean gold prob clean {pc.mean():.3f} vs silence {ps.mean():.3f}"


def _layerwise_rr(lm, r) -> np.ndarray:
    """Reference layer-wise recovery rate: patch every text position of layer l's output from the clean run
    into the silence run; RR = (p_patched - p_silence) / (p_clean - p_silence) of the gold first token,
    averaged over the items whose clean-vs-silence gap is at least 0.05."""
    eng = lm.engine
    layers = eng.spec.decoder_module(eng.model).layers
    L = len(layers)
    prep, sprep = r["prep"], r["sprep"]
    text = prep.attention_mask.bool() & ~prep.audio_mask  # same layout in both runs
    clean: dict[int, torch.Tensor] = {}

    def grab(l):
        def hook(_m, _i, o):
            clean[l] = (o[0] if isinstance(o, tuple) else o).detach().clone()
        return hook

    hs = [layers[l - 1].register_forward_hook(grab(l)) for l in range(1, L + 1)]
    try:
        with torch.no_grad():
            eng.run(prep)
    finally:
        for h in hs:
            h.remove()
    idx = np.arange(len(r["gold"]))
    pc, ps = r["p_clean"][idx, r["gold"]], r["p_sil"][idx, r["gold"]]
    keep = (pc - ps) >= 0.05
    assert keep.sum() >= 3, "too few items where silence changes the gold probability"
    rr = []
    for l in range(1, L + 1):
        def patch(_m, _i, o, l=l):
            h = o[0] if isinstance(o, tuple) else o
            h = torch.where(text[..., None], clean[l], h)
            return (h, *o[1:]) if isinstance(o, tuple) else h

        handle = layers[l - 1].register_forward_hook(patch)
        try:
            with torch.no_grad():
                logits = eng.unembed(eng.run(sprep).last_hidden_state[:, -1])
        finally:
            handle.remove()
        pp = logits.softmax(-1)[:, r["first"]].numpy()[idx, r["gold"]]
        rr.append(float(((pp - ps) / (pc - ps))[keep].mean()))
    return np.array(rr)


@pytest.mark.parametrize("track", ["gender"])
def test_layerwise_recovery_rises_to_one(lm, runs, track):
    rr = _layerwise_rr(lm, runs[track])
    assert abs(rr[-1] - 1.0) < 1e-4, rr.round(3).tolist()
    assert abs(rr[0]) < 0.35, f"RR at layer 1 not near 0: {rr.round(3).tolist()}"
    assert rr[-1] > rr[len(rr) // 2 - 1] > rr[0] - 1e-6 or rr[-1] > rr[0] + 0.5, rr.round(3).tolist()


@pytest.fixture(scope="module")
def calibration(lm, tmp_path_factory):
    from audio_tasks.calibration import run_calibration

    out = tmp_path_factory.mktemp("cal")
    art, _ = run_calibration(lm, ["demo_gender", "demo_language", "demo_emotion", "demo_animal"], out,
                             metadata={"split": "calibration"}, kinds=("layer_guided",), batch_size=16,
                             progress=False)
    return art


def test_layer_guided_steering_sweep(calibration):
    """Steering at the selected strength changes predictions, and the sweep has a non-trivial optimum."""
    sweep = {float(a): float(v) for a, v in calibration["layer_guided"]["sweep"].items()}
    alphas = sorted(sweep)
    accs = [sweep[a] for a in alphas]
    best = float(calibration["layer_guided"]["alpha"])
    assert sweep[best] != sweep[0.0] or any(v != sweep[0.0] for v in accs), f"steering changes nothing: {sweep}"
    monotone = all(x <= y for x, y in zip(accs, accs[1:])) or all(x >= y for x, y in zip(accs, accs[1:]))
    assert (alphas[0] < best < alphas[-1]) or not monotone, f"trivial optimum: best={best}, sweep={sweep}"


def test_steering_at_selected_strength_changes_predictions(lm, data_root, calibration):
    """Doc by doc: layer-guided steering at the calibrated strength flips some evaluation predictions."""
    from interventions.scoring import MCItem, score_items
    from interventions.steering import LayerGuided

    alpha = float(calibration["layer_guided"]["alpha"])
    assert alpha > 0, calibration["layer_guided"]
    weights = {int(k): v for k, v in calibration["heads"]["layer_weights"].items()}
    iv = LayerGuided(weights, alpha)
    flips = 0
    for track in ("emotion", "animal"):
        toks, gold, first = _items(lm, data_root, track, n=24)
        items = [MCItem(t, [[f] for f in first], {"gold": int(g)}) for t, g in zip(toks, gold)]
        base = score_items(lm.engine, items)
        steer = score_items(lm.engine, items, iv)
        flips += sum(int(np.argmax(a.first) != np.argmax(b.first)) for a, b in zip(base, steer))
    assert flips > 0
