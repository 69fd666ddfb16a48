"""Train the embedded reference model: ``python -m audio_tasks.reference.train --out audio_tasks/reference/model``.

A tiny Qwen2-Audio (tokenizer and chat template from :mod:`audio_tasks.tiny`) trained from scratch, with
teacher forcing, on the *train* split of the synthetic SAKURA dataset (:func:`audio_tasks.synthetic.ensure_dataset`),
prompt P3 of the four attribute tracks. The exact prompt the model sees at evaluation time is used:
``engine.render_chat(p3_user_prompt, assistant_prefix=track.prefix)``; the target is ``" " + label`` tokens
followed by ``<|im_end|>``; the loss is on the answer tokens only.

Differences from :func:`audio_tasks.tiny.tiny_qwen2_audio`: the Whisper feature extractor uses a 2-s window
(``chunk_length=2``, 200 mel frames) and the audio encoder ``max_source_positions=100`` so that the synthetic
1-2 s clips are not padded to 30 s (15x cheaper on CPU). Everything else (processor class, chat template,
audio placeholder expansion) is the stock Qwen2-Audio path.

Determinism: ``torch.manual_seed(seed)``, ``torch.use_deterministic_algorithms(True)``, ``torch.set_num_threads(2)``,
fixed data order from ``numpy.random.default_rng(seed)``. Training stops after ``--epochs`` epochs or when
``--minutes`` of wall-clock have passed (whichever is first; the time cap makes the *number of steps* machine
dependent, and the report records it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from audio_tasks.data.sakura_tracks import TRACKS as SAKURA_TRACKS

POSITION_SCALE = 0.1  # see build_model
TRACK_NAMES = tuple(SAKURA_TRACKS)  # ("gender", "language", "emotion", "animal")
# Per-track share of the train clips actually used (fewer emotion/animal clips: the reference model is
# deliberately weaker there so that interventions have something to fix).
DEFAULT_TRAIN_FRACTION = {"gender": 1.0, "language": 1.0, "emotion": 0.35, "animal": 0.35}


def build_model(out: Path, *, layers: int, hidden: int, heads: int, kv_heads: int, audio_dim: int,
                audio_layers: int, seed: int, window_s: int = 2):
    """Build the untrained reference Qwen2-Audio model (tokenizer saved under ``out``); return (model, processor)."""
    from audio_tasks.tiny import build_tokenizer, make_qwen2_audio

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=600)
    model, proc = make_qwen2_audio(tok, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                                   audio_dim=audio_dim, audio_layers=audio_layers, seed=seed, window_s=window_s,
                                   audio_extra=dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    with torch.no_grad():  # the fixed sinusoidal positions otherwise swamp the (small) mel content at init
        model.model.audio_tower.embed_positions.weight.mul_(POSITION_SCALE)
    return model, proc


def _examples(proc, engine, root: Path, split: str, fractions: dict[str, float] | None, seed: int):
    """Per clip: input ids (prompt + answer + <|im_end|>), answer positions, features, first-token choices."""
    from audio_tasks.audio import load_audio
    from audio_tasks.data.sakura import get_track, p3_user_prompt, read_local

    tok = proc.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    out = []
    for track in TRACK_NAMES:
        t = get_track(track)
        prompt = engine.render_chat(p3_user_prompt(track), assistant_prefix=t.prefix)
        rows = [r for r in read_local(track, root, "p3") if r["split"] == split]
        if fractions is not None and fractions.get(track, 1.0) < 1.0:
            rng = np.random.default_rng([seed, TRACK_NAMES.index(track)])
            by_label: dict[str, list] = {}
            for r in rows:
                by_label.setdefault(r["attribute_label"].strip().casefold(), []).append(r)
            keep = []
            for lab in sorted(by_label):
                rs = by_label[lab]
                n = max(1, int(round(fractions[track] * len(rs))))
                keep += [rs[i] for i in sorted(rng.permutation(len(rs))[:n])]
            rows = keep
        n_text = len(tok(prompt, add_special_tokens=False)["input_ids"])
        answers = {}
        for lab in t.labels:
            full = tok(prompt + " " + lab, add_special_tokens=False)["input_ids"]
            assert full[:n_text] == tok(prompt, add_special_tokens=False)["input_ids"], "prompt tokens change"
            answers[lab] = full[n_text:]
        for r in rows:
            lab = next(x for x in t.labels if x.casefold() == r["attribute_label"].strip().casefold())
            wav = load_audio(r["_audio"], 16000, where=r["_where"])
            enc = proc(text=[prompt], audio=[wav], sampling_rate=16000, return_tensors="pt")
            p_ids = enc["input_ids"][0].tolist()
            ans = answers[lab] + [im_end]
            out.append({"track": track, "ids": p_ids + ans, "n_prompt": len(p_ids), "n_ans": len(ans),
                        "gold": t.labels.index(lab), "input_features": enc["input_features"],
                        "feature_attention_mask": enc["feature_attention_mask"]})
    return out


def _first_token_ids(proc, engine, track: str) -> list[int]:
    from audio_tasks.data.sakura import get_track, p3_user_prompt

    tok = proc.tokenizer
    t = get_track(track)
    prompt = engine.render_chat(p3_user_prompt(track), assistant_prefix=t.prefix)
    n = len(tok(prompt, add_special_tokens=False)["input_ids"])
    return [tok(prompt + " " + lab, add_special_tokens=False)["input_ids"][n] for lab in t.labels]


def _forward(model, spec, batch, pad_id: int):
    """Logits (B, T, V) of a right-padded batch, audio scattered as the engine does."""
    B = len(batch)
    T = max(len(e["ids"]) for e in batch)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, e in enumerate(batch):
        ids[b, : len(e["ids"])] = torch.tensor(e["ids"])
        mask[b, : len(e["ids"])] = 1
    feats = {"input_features": torch.cat([e["input_features"] for e in batch], 0),
             "feature_attention_mask": torch.cat([e["feature_attention_mask"] for e in batch], 0)}
    audio_id = model.config.audio_token_id
    audio = spec.encode_audio(model, feats, [int((ids[b] == audio_id).sum()) for b in range(B)])
    emb = spec.embed_module(model)(ids)
    rows = []
    for b in range(B):
        pos = (ids[b] == audio_id).nonzero().squeeze(-1)
        assert pos.numel() == audio[b].shape[0], (pos.numel(), audio[b].shape)
        e = emb[b].clone()
        e[pos] = audio[b].to(e.dtype)
        rows.append(e)
    emb = torch.stack(rows, 0)
    pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    h = spec.decoder_module(model)(inputs_embeds=emb, attention_mask=mask, position_ids=pos_ids,
                                   use_cache=False, return_dict=True).last_hidden_state
    return h


@torch.no_grad()
def evaluate(model, spec, proc, engine, examples, pad_id: int, bs: int = 64) -> dict[str, float]:
    """Return the first-token accuracy of ``model`` on ``examples``, per track."""
    model.eval()
    firsts = {t: _first_token_ids(proc, engine, t) for t in TRACK_NAMES}
    hits: dict[str, list[float]] = {t: [] for t in TRACK_NAMES}
    for i in range(0, len(examples), bs):
        batch = examples[i: i + bs]
        h = _forward(model, spec, batch, pad_id)
        head = spec.unembed_module(model)
        for b, e in enumerate(batch):
            logits = head(h[b, e["n_prompt"] - 1]).float()
            cand = logits[firsts[e["track"]]]
            hits[e["track"]].append(float(int(cand.argmax()) == e["gold"]))
    return {t: float(np.mean(v)) for t, v in hits.items() if v}


def main(argv: list[str] | None = None) -> int:
    """Command line: train the reference model; return the exit code."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=13.0, help="wall-clock cap of the training loop")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--eval_every", type=int, default=0, help="evaluate every N epochs (0: only at the end)")
    p.add_argument("--data_root", default=None, help="default: audio_tasks.synthetic.ensure_dataset(seed=0)")
    a = p.parse_args(argv)

    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    t0 = time.time()

    from audio_tasks.synthetic import ensure_dataset
    from interventions.engine import Engine
    from interventions.specs import spec_for_config

    root = Path(a.data_root) if a.data_root else ensure_dataset()
    out = Path(a.out)
    model, proc = build_model(out, layers=a.layers, hidden=a.hidden, heads=4, kv_heads=2, audio_dim=64,
                              audio_layers=2, seed=a.seed)
    spec = spec_for_config(model.config)
    engine = Engine(model, proc, spec)
    pad_id = proc.tokenizer.pad_token_id
    train = _examples(proc, engine, root, "train", DEFAULT_TRAIN_FRACTION, a.seed)
    evalset = _examples(proc, engine, root, "evaluation", None, a.seed)
    t_prep = time.time() - t0
    print(f"[train] {len(train)} train / {len(evalset)} eval clips prepared in {t_prep:.1f}s", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.98))
    steps_per_epoch = (len(train) + a.batch_size - 1) // a.batch_size
    total = steps_per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / max(1, total)))
    rng = np.random.default_rng(a.seed)
    step, deadline, history = 0, t0 + a.minutes * 60, []
    stopped_by = "epochs"
    for epoch in range(a.epochs):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), a.batch_size):
            batch = [train[j] for j in order[i: i + a.batch_size]]
            h = _forward(model, spec, batch, pad_id)
            sel_h, tgt = [], []
            for b, e in enumerate(batch):
                s = e["n_prompt"] - 1
                sel_h.append(h[b, s: s + e["n_ans"]])
                tgt += e["ids"][e["n_prompt"]: e["n_prompt"] + e["n_ans"]]
            logits = spec.unembed_module(model)(torch.cat(sel_h, 0)).float()
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(tgt))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        due = a.eval_every and (epoch + 1) % a.eval_every == 0
        acc = evaluate(model, spec, proc, engine, evalset, pad_id) if due else None
        history.append({"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)), "eval": acc,
                        "elapsed_s": round(time.time() - t0, 1)})
        print(f"[train] {history[-1]}", flush=True)
        if time.time() > deadline:
            stopped_by = "minutes"
            break

    model.eval()
    acc = evaluate(model, spec, proc, engine, evalset, pad_id)
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    elapsed = time.time() - t0
    report = {
        "command": "python -m audio_tasks.reference.train " + " ".join(shlex.quote(x) for x in
                                                                       (argv if argv is not None else sys.argv[1:])),
        "seed": a.seed, "steps": step, "epochs_run": len(history), "stopped_by": stopped_by,
        "train_seconds": round(elapsed, 1), "prep_seconds": round(t_prep, 1),
        "data": {"root": "audio_tasks.synthetic.ensure_dataset(seed=0)", "split": "train",
                 "train_fraction": DEFAULT_TRAIN_FRACTION, "n_train": len(train), "n_eval": len(evalset)},
        "hyper": {"lr": a.lr, "batch_size": a.batch_size, "epochs": a.epochs, "layers": a.layers,
                  "hidden": a.hidden, "heads": 4, "kv_heads": 2, "audio_dim": 64, "audio_layers": 2,
                  "window_s": 2},
        "eval_first_token_accuracy": acc,
        "chance": {"gender": 1 / 2, "language": 1 / 8, "emotion": 1 / 5, "animal": 1 / 9},
        "history": history,
        "torch": torch.__version__,
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"out": str(out), "eval_first_token_accuracy": acc, "seconds": round(elapsed, 1),
                      "steps": step}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
