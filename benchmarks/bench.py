"""Throughput benchmark of the scoring engine against same-process baselines (targets T1-T5).

    python -m benchmarks.bench --device cpu --config small --out DIR
    python -m benchmarks.bench --device cuda --config full --out DIR     # Qwen2-Audio-7B sizes, random bf16

The model is built from a config with random weights (no download) through
``interventions.load_engine(..., random_weights=True)``; the tokenizer / processor come from the tiny builder
(:func:`audio_tasks.tiny.build`); items from lm-eval requests through :func:`audio_tasks.requests.build_items`.
Times: ``torch.utils.benchmark.Timer`` (median of ``--repeats`` measurements, each after a warm-up run).
Clips are SAKURA-like synthetic audio (noise / tones) of
realistic lengths.  Every path and its baseline run in the same process; results go to DIR/results.json and
DIR/results.md (written atomically).  FLOPs are analytic estimates (2 * params * tokens + attention + encoder).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.benchmark import Timer

from audio_tasks.data.sakura_tracks import TRACKS as SAKURA_TRACKS

SR = 16000

CONFIGS: dict[str, dict[str, Any]] = {
    # text: hidden, layers, heads, kv heads, intermediate, vocab; audio encoder: d_model, layers, heads, ffn
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=4, inter=128, vocab=None, a_dim=32, a_layers=1,
                 a_heads=2, a_ffn=64, dtype="float32", docs=2, batch=2, repeats=1, scaling_docs=2,
                 tasks=("gender", "animal"), scaling=False),
    "small": dict(hidden=512, layers=8, heads=8, kv_heads=8, inter=1376, vocab=8192, a_dim=256, a_layers=2,
                  a_heads=4, a_ffn=1024, dtype="float32", docs=8, batch=8, repeats=1, scaling_docs=4),
    "full": dict(hidden=4096, layers=32, heads=32, kv_heads=32, inter=11008, vocab=156032, a_dim=1280,
                 a_layers=32, a_heads=20, a_ffn=5120, dtype="bfloat16", docs=64, batch=16, repeats=3,
                 scaling_docs=32),
}

# name: (labels, question, prefix, mean clip seconds); the SAKURA table lives in audio_tasks.data.sakura_tracks.
_MEAN_CLIP_S = {"gender": 5.8, "language": 5.8, "emotion": 3.1, "animal": 4.5}
TASKS = {name: (t.labels, t.question, t.prefix, _MEAN_CLIP_S[name]) for name, t in SAKURA_TRACKS.items()}

TARGETS = {
    "T1_ms_per_doc": 16.0, "T1_speedup_gender": 2.5, "T1_speedup_animal": 10.0,
    "T2_cost_ratio_k3": 1 + 0.55 * 2, "T3_ratio": 1.15, "T4_plain_equiv": 8.0, "T5_ratio": 2.1,
}


# ---- model -----------------------------------------------------------------------------------------------

def bench_checkpoint(cfg: dict[str, Any], tok_dir: Path, out: Path, *, layers: int | None = None) -> Path:
    """Write the benchmark model's checkpoint folder: a Qwen2-Audio config of ``cfg``'s sizes and the tiny
    builder's processor, no weights (``load_engine(..., random_weights=True)`` draws them on the device)."""
    from transformers import AutoProcessor, Qwen2AudioConfig

    proc = AutoProcessor.from_pretrained(str(tok_dir))
    tok = proc.tokenizer
    vocab = cfg["vocab"] or len(tok)
    mcfg = Qwen2AudioConfig(
        audio_config=dict(d_model=cfg["a_dim"], encoder_layers=cfg["a_layers"], encoder_attention_heads=cfg["a_heads"],
                          encoder_ffn_dim=cfg["a_ffn"], num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=cfg["hidden"], intermediate_size=cfg["inter"],
                         num_hidden_layers=layers or cfg["layers"], num_attention_heads=cfg["heads"],
                         num_key_value_heads=cfg["kv_heads"], vocab_size=max(vocab, len(tok)),
                         max_position_embeddings=8192, tie_word_embeddings=False, rms_norm_eps=1e-6),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    out.mkdir(parents=True, exist_ok=True)
    mcfg.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def bench_engine(cfg: dict[str, Any], device: str, tok_dir: Path, *, layers: int | None = None, seed: int = 0):
    """The engine of the benchmark model through :func:`interventions.load_engine` (random weights from ``seed``)."""
    from interventions import load_engine

    ckpt = bench_checkpoint(cfg, tok_dir, Path(tempfile.mkdtemp(prefix="bench_model_")), layers=layers)
    torch.manual_seed(seed)
    engine = load_engine(ckpt, device=device, dtype=cfg["dtype"], attn_implementation="sdpa", random_weights=True)
    gen: Any = engine.model.generation_config  # a GenerationConfig (model typed as nn.Module)
    gen.eos_token_id, gen.pad_token_id = engine.tokenizer.eos_token_id, engine.tokenizer.pad_token_id
    return engine


def param_counts(engine) -> dict[str, int]:
    model, spec = engine.model, engine.spec
    dec = spec.decoder_module(model)
    emb = spec.embed_module(model).weight.numel()
    text_all = sum(p.numel() for p in dec.parameters())
    head = spec.unembed_module(model).weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {"text_nonembed": text_all - emb, "embed": emb, "lm_head": head, "encoder": total - text_all - head}


class Flops:
    """Analytic FLOP estimates for the built model."""

    def __init__(self, engine):
        m = engine.model
        self.p = param_counts(engine)
        tc = m.config.text_config
        ac = m.config.audio_config
        self.L, self.d, self.V = tc.num_hidden_layers, tc.hidden_size, tc.vocab_size
        self.La, self.da = ac.encoder_layers, ac.d_model

    def decoder(self, new: int, ctx: int, unembed_positions: int) -> float:
        """``new`` tokens attending to ``ctx`` earlier tokens (+ themselves, causal)."""
        attn = 4.0 * self.L * self.d * new * (ctx + new / 2.0)
        return 2.0 * self.p["text_nonembed"] * new + attn + 2.0 * self.d * self.V * unembed_positions

    def encoder(self, clips: int = 1, mel_frames: int = 3000) -> float:
        """``mel_frames`` = 3000: the stock 30-s Whisper window; ours cuts it after the longest clip."""
        frames = (mel_frames - 1) // 2 + 1  # after the stride-2 conv
        conv = 2.0 * (128 * 3 * self.da * mel_frames + self.da * 3 * self.da * frames)
        return clips * (2.0 * self.p["encoder"] * frames + 4.0 * self.La * self.da * frames * frames + conv)


def cut_window(items) -> int:
    """Mel frames the Qwen2-Audio spec runs for a batch: longest clip (10-ms hop) + margin, at most 3000."""
    from interventions.specs import _MEL_MARGIN

    return min(3000, max(len(c) // 160 for it in items for c in it.tok.clips) + _MEL_MARGIN)


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Measured dense matmul TFLOP/s in this process (CPU) or on this GPU (best of 4 blocks of 3 products)."""
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = Timer(stmt="a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    best = min(timer.timeit(number=3).mean for _ in range(4))
    return 2.0 * n ** 3 / best / 1e12


# ---- data ------------------------------------------------------------------------------------------------

def make_clip(rng: np.random.Generator, seconds: float, kind: str) -> np.ndarray:
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    if kind == "animal":
        f = rng.uniform(200, 2000)
        x = 0.3 * np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 6) * t))
    else:  # speech-like: harmonic tone with formant-ish noise bursts
        f0 = rng.uniform(90, 250)
        x = sum(0.15 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 5))
        x = x * (rng.random(n // 1600 + 1).repeat(1600)[:n] > 0.3)
    x = x + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def clip_lengths(rng: np.random.Generator, mean: float, n: int) -> list[float]:
    """Realistic spread (+-15 %) at 0.1-s resolution (some clips share a length, as in SAKURA)."""
    return [max(0.5, round(float(mean * rng.uniform(0.85, 1.15)), 1)) for _ in range(n)]


def make_items(engine, task: str, clips: list[np.ndarray], prompt: str = "p3", labels=None) -> list[Any]:
    """Scoring items of ``clips`` as ``audio_lalm`` builds them: lm-eval requests through
    :func:`audio_tasks.requests.build_items` (chat rendering, continuation split, tokenization)."""
    from lm_eval.api.instance import Instance

    from audio_tasks.requests import build_items

    labs, question, prefix, _ = TASKS[task]
    labs = tuple(labels or labs)
    user = {"p1": "", "p2": question, "p3": f"{question} Possible options: {', '.join(labs)}."}[prompt]
    doc = {"user_prompt": user, "assistant_prefix": prefix, "choices": list(labs)}
    reqs = [Instance(request_type="loglikelihood", doc=doc, idx=j, metadata=(f"bench_{task}", i, 1),
                     arguments=(user, " " + lab, {"audio": [{"array": c, "sampling_rate": SR}]}))
            for i, c in enumerate(clips) for j, lab in enumerate(labs)]
    items = build_items(engine, reqs, collisions="allow")
    for i, it in enumerate(items):
        it.meta.update(gold=i % len(labs), labels=labs)
    return items


# ---- timing ----------------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` measurements by ``torch.utils.benchmark.Timer``
    (``blocked_autorange`` with no minimum time: one run sizes the block and serves as the warm-up, the next
    one is measured; the accelerator is synchronised around it and this process' thread count kept)."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return statistics.median(timer.blocked_autorange(min_run_time=0.0).median for _ in range(repeats))


def peak_mem_mb(device: str) -> float:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024


def reset_mem(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def batches(seq: list, n: int) -> list[list]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


# ---- paths -----------------------------------------------------------------------------------------------

def ours(engine, items, batch: int, intervention=None):
    engine.clear_caches()  # fresh caches: every clip pays its feature extraction and encoder pass
    return _score_fresh_tokens(engine, items, batch, intervention)


def fresh_tokens(engine, items):
    """Re-tokenize inside the timed region: every path pays its processor calls (mel features), as the
    per-choice baseline does."""
    from interventions.scoring import MCItem

    return [MCItem(engine.tokenize(it.meta["prompt"], it.tok.clips), it.continuations, it.meta) for it in items]


def _score_fresh_tokens(engine, items, batch: int, intervention=None, share_prefix: bool = False):
    from interventions.scoring import score_items

    items = fresh_tokens(engine, items)
    out = []
    for b in batches(items, batch):
        out.extend(score_items(engine, b, intervention, share_prefix=share_prefix))
    return out


def several_configs_shared(engine, cfg_items: list[list[Any]], batch: int, ivs: list[Any] | None = None):
    """k configurations of the same clips, as ``audio_lalm`` runs them: the clips in chunks of one
    batch, every configuration scored per chunk against the audio-prefix KV computed once per clip."""
    engine.clear_caches()
    engine.reserve_prefix_cache(2 * batch)
    ivs = ivs or [None] * len(cfg_items)
    for start in range(0, len(cfg_items[0]), batch):
        for its, iv in zip(cfg_items, ivs):
            _score_fresh_tokens(engine, its[start:start + batch], batch, iv, share_prefix=True)


def _hf_inputs(engine, proc, item, extra_ids: list[int] | None = None):
    clip = item.tok.clips[0]
    enc = proc(text=[item.meta["prompt"].rstrip()], audio=[clip], sampling_rate=SR, return_tensors="pt")
    ids = enc["input_ids"]
    if extra_ids:
        ids = torch.cat([ids, torch.tensor([extra_ids])], 1)
    dev = engine.device
    return {"input_ids": ids.to(dev), "attention_mask": torch.ones_like(ids).to(dev),
            "input_features": enc["input_features"].to(dev, engine.dtype),
            "feature_attention_mask": enc["feature_attention_mask"].to(dev)}


@torch.no_grad()
def baseline_per_choice(engine, proc, items):
    """lm-eval's per-request path: for each (doc, choice), the processor + one full model forward (audio encoder
    included) on prompt + continuation at batch 1; log-prob of the continuation from the full logits."""
    res = []
    for it in items:
        lls = []
        for cont in it.continuations:
            inp = _hf_inputs(engine, proc, it, cont)
            logits = engine.model(**inp).logits[0].float()
            n = len(cont)
            lp = torch.log_softmax(logits[-n - 1:-1], -1)
            lls.append(float(lp[torch.arange(n), torch.tensor(cont, device=lp.device)].sum()))
        res.append(lls)
    return res


@torch.no_grad()
def baseline_generate(engine, proc, items, new_tokens: int = 16):
    """Generate-then-parse: greedy ``new_tokens`` tokens at batch 1, then look for a label in the text."""
    res = []
    for it in items:
        inp = _hf_inputs(engine, proc, it)
        out = engine.model.generate(**inp, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        text = engine.tokenizer.decode(out[0, inp["input_ids"].shape[1]:], skip_special_tokens=True).lower()
        labs = it.meta["labels"]
        hit = [i for i, lab in enumerate(labs) if lab.lower() in text]
        res.append(hit[0] if hit else -1)
    return res


def _tracing(engine, items, *, batched: bool):
    """Layer-wise tracing: batched (L rows per forward, corrupted prefix cached) or the naive loop."""
    from analysis.tracing import layer_variants, patched_probs, prepare_trace

    engine.clear_caches()
    out = []
    for it in fresh_tokens(engine, items):
        run = prepare_trace(engine, it)
        out.append(patched_probs(engine, run, layer_variants(run), rows=engine.num_layers if batched else 1,
                                 prefix_cache=batched))
    return out


def tracing_batched(engine, items):
    return _tracing(engine, items, batched=True)


def tracing_naive(engine, items):
    return _tracing(engine, items, batched=False)


def lens_two_positions(engine, items, batch: int):
    from analysis.lens import lens_batch

    engine.clear_caches()
    out = []
    for b in batches(fresh_tokens(engine, items), batch):
        out.extend(lens_batch(engine, b, positions={"prev": -2, "last": -1}, masked=False))
    return out


# ---- FLOP accounting per path ----------------------------------------------------------------------------

def flops_ours(fl: Flops, items, batch: int) -> float:
    tot = 0.0
    for b in batches(items, batch):
        T = max(int(it.tok.input_ids.shape[0]) for it in b)
        tot += len(b) * fl.decoder(T, 0, 1)
        for it in b:
            for c in it.continuations:
                if len(c) > 1:
                    tot += fl.decoder(max(len(c) for c in it.continuations) - 1, T, len(c) - 1)
        tot += fl.encoder(len(b), cut_window(b))
    return tot


def flops_per_choice(fl: Flops, items) -> float:
    tot = 0.0
    for it in items:
        T = int(it.tok.input_ids.shape[0])
        for c in it.continuations:
            tot += fl.decoder(T + len(c), 0, T + len(c)) + fl.encoder(1)
    return tot


def flops_generate(fl: Flops, items, n: int = 16) -> float:
    tot = 0.0
    for it in items:
        T = int(it.tok.input_ids.shape[0])
        tot += fl.decoder(T, 0, T) + fl.encoder(1)
        tot += sum(fl.decoder(1, T + k, 1) for k in range(n - 1))
    return tot


# ---- main ------------------------------------------------------------------------------------------------

def _bench_config(args) -> dict[str, Any]:
    """The named configuration with the command line's --docs / --repeats / --batch overrides."""
    cfg = dict(CONFIGS[args.config])
    if args.docs:
        cfg["docs"] = args.docs
    if args.repeats:
        cfg["repeats"] = args.repeats
    if args.batch:
        cfg["batch"] = args.batch
    return cfg


def run_bench(args) -> dict[str, Any]:
    from audio_tasks.tiny import build
    from interventions.steering import HeadSteer, LayerGuided, layer_weights

    cfg = _bench_config(args)
    dev = args.device
    tasks = cfg.get("tasks", tuple(TASKS))
    if dev == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    build("qwen2_audio", tok_dir, layers=1, hidden=32, heads=2, kv_heads=1, audio_dim=16, audio_layers=1)
    t_start = time.perf_counter()
    engine = bench_engine(cfg, dev, tok_dir)
    proc = engine.processor
    fl = Flops(engine)
    dtype = engine.dtype
    peak = matmul_peak(dev, dtype)
    R, B, N = cfg["repeats"], cfg["batch"], cfg["docs"]
    rng = np.random.default_rng(0)
    clips = {t: [make_clip(rng, s, t) for s in clip_lengths(rng, TASKS[t][3], N)] for t in tasks}
    res: dict[str, Any] = {"config": args.config, "model": {k: v for k, v in cfg.items()},
                           "params": param_counts(engine), "device": dev, "dtype": str(dtype),
                           "peak_tflops": peak, "peak_source": "measured dense matmul in-process",
                           "docs_per_task": N, "batch": B, "repeats": R}

    def tf(flops: float, secs: float) -> float:
        return flops / secs / 1e12 if secs > 0 else float("nan")

    def entry(secs: float, n_docs: int, flops: float, **extra) -> dict[str, Any]:
        return {"seconds": secs, "ms_per_doc": 1e3 * secs / n_docs, "docs_per_s": n_docs / secs,
                "tflops": tf(flops, secs), "mfu": tf(flops, secs) / peak, "peak_mem_mb": peak_mem_mb(dev), **extra}

    # ---- T1 ------------------------------------------------------------------------------------------------
    t1: dict[str, Any] = {}
    items_by_task = {t: make_items(engine, t, clips[t]) for t in tasks}
    for task, items in items_by_task.items():
        reset_mem(dev)
        s = timed(lambda: ours(engine, items, B), R)
        row = {"choices": len(items[0].continuations), "ours": entry(s, N, flops_ours(fl, items, B))}
        if task in ("gender", "animal"):
            reset_mem(dev)
            sb = timed(lambda: baseline_per_choice(engine, proc, items), 1)
            row["per_choice_batch1"] = entry(sb, N, flops_per_choice(fl, items))
            reset_mem(dev)
            sg = timed(lambda: baseline_generate(engine, proc, items), 1)
            row["generate16"] = entry(sg, N, flops_generate(fl, items))
            row["speedup_vs_per_choice"] = sb / s
            row["speedup_vs_generate"] = sg / s
        t1[task] = row
    res["T1"] = t1

    # ---- T2: k = 3 prompt configurations of the same clips ---------------------------------------------------
    clips2 = clips["gender"]
    cfg_items = [make_items(engine, "gender", clips2, p) for p in ("p1", "p2", "p3")]

    runs = {"shared": 0, "independent": 0}  # the engine's counters are divided by the runs the Timer made

    def shared():
        runs["shared"] += 1
        several_configs_shared(engine, cfg_items, B)

    def independent():
        runs["independent"] += 1
        for its in cfg_items:
            ours(engine, its, B)

    e0, p0, h0 = engine.encoder_calls, engine.prefix_tokens_computed, engine.prefix_hits
    s_sh = timed(shared, R)
    enc_shared = (engine.encoder_calls - e0) // runs["shared"]
    prefix_tokens = (engine.prefix_tokens_computed - p0) // runs["shared"]
    prefix_hits = (engine.prefix_hits - h0) // runs["shared"]
    e0 = engine.encoder_calls
    s_ind = timed(independent, R)
    enc_ind = (engine.encoder_calls - e0) // runs["independent"]
    s_one = statistics.mean(timed(lambda its=its: ours(engine, its, B), R) for its in cfg_items)
    res["T2"] = {"k": 3, "shared_seconds": s_sh, "independent_seconds": s_ind, "one_config_seconds": s_one,
                 "cost_ratio_k3": s_sh / s_one, "independent_ratio_k3": s_ind / s_one,
                 "encoder_calls_shared": enc_shared, "encoder_calls_independent": enc_ind, "clips": N,
                 "prefix_tokens_computed_shared": prefix_tokens, "prefix_reuses_shared": prefix_hits,
                 "target_ratio": TARGETS["T2_cost_ratio_k3"]}
    # k = 3 intervention configurations of one prompt (a strength sweep, as calibration runs it).
    from interventions.steering import Enrich

    L2 = engine.num_layers
    sweep = [Enrich(1, lam, min(2, L2 - 1)) for lam in (0.5, 1.0, 2.0)]
    items_p3 = cfg_items[2]
    s_iv_sh = timed(lambda: several_configs_shared(engine, [items_p3] * 3, B, sweep), R)
    s_iv_one = statistics.mean(timed(lambda iv=iv: ours(engine, items_p3, B, iv), R) for iv in sweep)
    res["T2"]["interventions"] = {"configs": [iv.describe() for iv in sweep], "shared_seconds": s_iv_sh,
                                  "one_config_seconds": s_iv_one, "cost_ratio_k3": s_iv_sh / s_iv_one}

    # ---- T3: lens of all layers at two positions ------------------------------------------------------------
    items = items_by_task["gender"]
    s_plain = timed(lambda: ours(engine, items, B), R)
    s_lens = timed(lambda: lens_two_positions(engine, items, B), R)
    res["T3"] = {"plain_seconds": s_plain, "lens_seconds": s_lens, "ratio": s_lens / s_plain,
                 "layers": engine.num_layers + 1, "positions": 2}

    # ---- T4: layer-wise causal tracing ------------------------------------------------------------------------
    n4 = max(1, min(N, args.trace_docs or N))
    items4 = items[:n4]
    s_plain4 = timed(lambda: ours(engine, items4, B), R)
    s_tr = timed(lambda: tracing_batched(engine, items4), R)
    s_nv = timed(lambda: tracing_naive(engine, items4), 1)
    res["T4"] = {"docs": n4, "layers": engine.num_layers, "plain_ms_per_doc": 1e3 * s_plain4 / n4,
                 "batched_ms_per_doc": 1e3 * s_tr / n4, "naive_ms_per_doc": 1e3 * s_nv / n4,
                 "plain_equiv": s_tr / s_plain4, "naive_plain_equiv": s_nv / s_plain4,
                 "naive_nominal_equiv": engine.num_layers + 2, "impl": "analysis.tracing (prefix cache, L rows)"}

    # ---- T5: steering -----------------------------------------------------------------------------------------
    L, H = engine.num_layers, cfg["heads"]
    heads = [(max(1, L - 2), 0), (max(1, L - 1), 1 % H), (L, 2 % H)]
    lg = LayerGuided(weights=layer_weights(heads), alpha=1.0, heads=heads)
    hs = HeadSteer(heads=heads, alpha=1.0)
    s_un = timed(lambda: ours(engine, items, B), R)
    s_lg = timed(lambda: ours(engine, items, B, lg), R)
    s_hs = timed(lambda: ours(engine, items, B, hs), R)
    res["T5"] = {"unsteered_seconds": s_un, "layer_guided_seconds": s_lg, "head_seconds": s_hs,
                 "layer_guided_ratio": s_lg / s_un, "head_ratio": s_hs / s_un, "heads": [list(h) for h in heads]}

    # ---- batch_size=auto ------------------------------------------------------------------------------------
    res["batch_auto"] = batch_auto_check(tok_dir, dev, clips["gender"][:2])

    # ---- scaling (small models / the chosen config) -----------------------------------------------------------
    if cfg.get("scaling", True) and not args.no_scaling:
        res["scaling"] = scaling(cfg, dev, tok_dir, engine, args)
    res["peak_mem_mb_process"] = peak_mem_mb(dev)
    # The peak is measured again at the end and the higher value kept: a shared or throttled machine
    # under-measures it once in a while, which would overstate every MFU figure.
    res["peak_tflops_start"] = peak
    res["peak_tflops_end"] = matmul_peak(dev, dtype)
    res["peak_tflops"] = max(peak, res["peak_tflops_end"])
    for row in res["T1"].values():
        for k, v in row.items():
            if isinstance(v, dict) and "tflops" in v:
                v["mfu"] = v["tflops"] / res["peak_tflops"]
    res["total_seconds"] = time.perf_counter() - t_start
    return res


def batch_auto_check(tok_dir: Path, dev: str, clips: list[np.ndarray]) -> dict[str, Any]:
    """AudioLALM(batch_size=auto) on the tiny model completes (OOM back-off is exercised only on GPU)."""
    from lm_eval.api.instance import Instance

    from audio_tasks.model import AudioLALM

    lm = AudioLALM(pretrained=str(tok_dir), device=dev, batch_size="auto", max_batch_size=4)
    labs, q, prefix, _ = TASKS["gender"]
    reqs = []
    for i, c in enumerate(clips):
        doc = {"user_prompt": q, "assistant_prefix": prefix, "choices": list(labs)}
        for lab in labs:
            reqs.append(Instance(request_type="loglikelihood", doc=doc,
                                 arguments=(q, " " + lab, {"audio": [{"array": c, "sampling_rate": SR}]}),
                                 idx=0, metadata=("sakura_gender", i, 1)))
    t = time.perf_counter()
    out = lm.loglikelihood(reqs)
    ok = len(out) == len(reqs) and all(np.isfinite(float(o[0])) for o in out)
    return {"completed": bool(ok), "requests": len(reqs), "final_batch_size": lm.batch_size_per_gpu,
            "seconds": time.perf_counter() - t}


def scaling(cfg, dev, tok_dir, engine, args) -> dict[str, Any]:
    n = cfg["scaling_docs"] if not args.docs else min(cfg["scaling_docs"], args.docs)
    B, R = cfg["batch"], cfg["repeats"]
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {"docs": n}
    rows = []
    for sec in (2.0, 4.0, 8.0):
        cl = [make_clip(rng, sec, "gender") for _ in range(n)]
        its = make_items(engine, "gender", cl)
        s = timed(lambda: ours(engine, its, B), R)
        rows.append({"clip_s": sec, "tokens": int(its[0].tok.input_ids.shape[0]), "ms_per_doc": 1e3 * s / n})
    out["clip_length"] = rows
    rows = []
    cl = [make_clip(rng, 4.5, "animal") for _ in range(n)]
    for k in (2, 5, 9):
        its = make_items(engine, "animal", cl, labels=TASKS["animal"][0][:k])
        s = timed(lambda: ours(engine, its, B), R)
        row = {"choices": k, "ms_per_doc": 1e3 * s / n}
        sb = timed(lambda: baseline_per_choice(engine, engine.processor, its), 1)
        row["per_choice_ms_per_doc"] = 1e3 * sb / n
        row["speedup"] = sb / s
        rows.append(row)
    out["choices"] = rows
    rows = []
    cl = [make_clip(rng, 5.8, "gender") for _ in range(n)]
    for layers in (2, 4, 8):
        eng = bench_engine(cfg, dev, tok_dir, layers=layers)
        its = make_items(eng, "gender", cl)
        s = timed(lambda: ours(eng, its, B), R)
        rows.append({"layers": layers, "ms_per_doc": 1e3 * s / n})
    out["layers"] = rows
    return out


# ---- report ----------------------------------------------------------------------------------------------

def _f(x: float, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    from analysis.tables import markdown_table

    return markdown_table(header, rows).rstrip("\n")


def markdown(res: dict[str, Any]) -> str:
    t1, t2, t3, t4, t5 = (res[k] for k in ("T1", "T2", "T3", "T4", "T5"))
    g, a = t1["gender"], t1["animal"]
    worst_ms = max(r["ours"]["ms_per_doc"] for r in t1.values())

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = [f"# Benchmark results ({res['config']} config, {res['device']}, {res['dtype']})", "",
             f"Peak (measured matmul): {_f(res['peak_tflops'], 3)} TFLOP/s; docs/task {res['docs_per_task']}, "
             f"batch {res['batch']}, repeats {res['repeats']}; "
             f"process peak memory {_f(res['peak_mem_mb_process'], 0)} MB.", ""]
    rows = [
        ("T1 ms/doc (worst task)", "<= 16 ms (H100 full)", f"{_f(worst_ms, 1)} ms", worst_ms <= 16),
        ("T1 speedup vs per-choice, gender", ">= 2.5x", f"{_f(g.get('speedup_vs_per_choice', float('nan')))}x",
         g.get("speedup_vs_per_choice", 0) >= 2.5),
        ("T1 speedup vs per-choice, animal", ">= 10x", f"{_f(a.get('speedup_vs_per_choice', float('nan')))}x",
         a.get("speedup_vs_per_choice", 0) >= 10),
        ("T1 speedup vs generate-16, gender", "(reported)", f"{_f(g.get('speedup_vs_generate', float('nan')))}x", None),
        ("T1 speedup vs generate-16, animal", "(reported)", f"{_f(a.get('speedup_vs_generate', float('nan')))}x", None),
        ("T2 cost of k=3 configs / one", "<= 2.10x", f"{_f(t2['cost_ratio_k3'])}x (independent: "
         f"{_f(t2['independent_ratio_k3'])}x; encoder calls {t2['encoder_calls_shared']} vs "
         f"{t2['encoder_calls_independent']}; prefix reused {t2.get('prefix_reuses_shared', 0)}x)",
         t2["cost_ratio_k3"] <= 2.1),
        ("T2 k=3 intervention strengths / one", "<= 2.10x",
         f"{_f(t2['interventions']['cost_ratio_k3'])}x", t2["interventions"]["cost_ratio_k3"] <= 2.1),
        ("T3 lens (all layers, 2 pos) / plain", "<= 1.15x", f"{_f(t3['ratio'])}x", t3["ratio"] <= 1.15),
        ("T4 layer tracing, plain-scoring equivalents/doc", "<= 8", f"{_f(t4['plain_equiv'])} (naive loop: "
         f"{_f(t4['naive_plain_equiv'])}, nominal L+2 = {t4['naive_nominal_equiv']})", t4["plain_equiv"] <= 8),
        ("T5 layer_guided / unsteered", "<= 2.1x", f"{_f(t5['layer_guided_ratio'])}x", t5["layer_guided_ratio"] <= 2.1),
        ("T5 head steering / unsteered", "<= 2.1x", f"{_f(t5['head_ratio'])}x", t5["head_ratio"] <= 2.1),
        ("batch_size=auto completes", "no OOM", str(res["batch_auto"]["completed"]), res["batch_auto"]["completed"]),
    ]
    lines.append(_table(["target", "goal", "measured", "status"],
                        [[name, goal, meas, "-" if ok is None else met(bool(ok))] for name, goal, meas, ok in rows]))
    lines += ["", "## T1 per task", ""]
    lines.append(_table(["task", "choices", "path", "ms/doc", "docs/s", "TFLOP/s", "MFU", "peak mem MB"],
                        [[task, r["choices"], path, _f(e["ms_per_doc"], 1), _f(e["docs_per_s"]), _f(e["tflops"], 4),
                          f"{_f(100 * e['mfu'], 1)}%", _f(e["peak_mem_mb"], 0)]
                         for task, r in t1.items() for path in ("ours", "per_choice_batch1", "generate16")
                         if path in r for e in (r[path],)]))
    lines += ["", f"T4: batched {_f(t4['batched_ms_per_doc'], 1)} ms/doc, "
              f"naive {_f(t4['naive_ms_per_doc'], 1)} ms/doc, "
              f"plain {_f(t4['plain_ms_per_doc'], 1)} ms/doc ({t4['layers']} layers, {t4['docs']} docs)."]
    sc = res.get("scaling")
    if sc:
        lines += ["", "## Scaling (ours, ms/doc)", ""]
        lines.append(_table(["clip s", "prompt tokens", "ms/doc"],
                            [[r["clip_s"], r["tokens"], _f(r["ms_per_doc"], 1)] for r in sc["clip_length"]]))
        lines += [""]
        lines.append(_table(["choices", "ours ms/doc", "per-choice ms/doc", "speedup"],
                            [[r["choices"], _f(r["ms_per_doc"], 1), _f(r["per_choice_ms_per_doc"], 1),
                              f"{_f(r['speedup'])}x"] for r in sc["choices"]]))
        lines += [""]
        lines.append(_table(["text layers", "ms/doc"], [[r["layers"], _f(r["ms_per_doc"], 1)] for r in sc["layers"]]))
    return "\n".join(lines) + "\n"


def flops_estimate(config: str, docs: int = 64, batch: int = 16) -> dict[str, Any]:
    """Analytic FLOPs per doc of every T1 path for a config, without running it: the model is built on
    the meta device (no memory, no weights), so the full-size 7B architecture can be counted on any
    machine.  Not a measurement: it bounds what compute-bound speedups can be."""
    from audio_tasks.tiny import build

    cfg = dict(CONFIGS[config])
    tok_dir = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    build("qwen2_audio", tok_dir, layers=1, hidden=32, heads=2, kv_heads=1, audio_dim=16, audio_layers=1)
    engine = bench_engine(cfg, "meta", tok_dir)
    fl = Flops(engine)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"config": config, "params": fl.p, "docs": docs, "batch": batch, "tasks": {}}
    for task in TASKS:
        items = make_items(engine, task, [make_clip(rng, s, task) for s in clip_lengths(rng, TASKS[task][3], docs)])
        ours_f = flops_ours(fl, items, batch) / docs
        pc, gen = flops_per_choice(fl, items) / docs, flops_generate(fl, items) / docs
        enc_cut = sum(fl.encoder(len(b), cut_window(b)) for b in batches(items, batch)) / docs
        full_window = fl.encoder(docs, 3000) / docs - enc_cut  # extra cost of the stock 30-s window
        out["tasks"][task] = {
            "choices": len(items[0].continuations), "prompt_tokens": statistics.mean(int(i.tok.input_ids.shape[0])
                                                                                    for i in items),
            "ours_tflop": ours_f / 1e12, "ours_30s_window_tflop": (ours_f + full_window) / 1e12,
            "encoder_share_ours": enc_cut / ours_f, "per_choice_tflop": pc / 1e12, "generate16_tflop": gen / 1e12,
            "flop_ratio_per_choice": pc / ours_f, "flop_ratio_generate16": gen / ours_f}
    return out


def flops_markdown(est: dict[str, Any]) -> str:
    p = est["params"]
    lines = [f"# Analytic FLOPs per doc ({est['config']} config; not a measurement)", "",
             f"Parameters: text (non-embedding) {p['text_nonembed'] / 1e9:.2f} B, embedding {p['embed'] / 1e9:.2f} B, "
             f"LM head {p['lm_head'] / 1e9:.2f} B, audio encoder + projector {p['encoder'] / 1e9:.2f} B; "
             f"{est['docs']} synthetic clips per task, batch {est['batch']}.", ""]
    lines.append(_table(["task", "choices", "prompt tokens", "ours TFLOP", "ours with 30-s window",
                         "encoder share (ours)", "per-choice TFLOP", "generate-16 TFLOP", "per-choice / ours",
                         "generate-16 / ours"],
                        [[t, r["choices"], _f(r["prompt_tokens"], 0), _f(r["ours_tflop"]),
                          _f(r["ours_30s_window_tflop"]), f"{_f(100 * r['encoder_share_ours'], 0)}%",
                          _f(r["per_choice_tflop"]), _f(r["generate16_tflop"]), f"{_f(r['flop_ratio_per_choice'])}x",
                          f"{_f(r['flop_ratio_generate16'])}x"] for t, r in est["tasks"].items()]))
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    from interventions.atomic import atomic_write_text

    atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", choices=sorted(CONFIGS), default="small")
    p.add_argument("--out", required=True)
    p.add_argument("--docs", type=int, default=None, help="docs per task (default: per config)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--trace-docs", type=int, default=None, dest="trace_docs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-scaling", action="store_true", dest="no_scaling")
    p.add_argument("--flops-only", action="store_true", dest="flops_only",
                   help="only the analytic FLOPs per doc of each path (model built on the meta device)")
    args = p.parse_args(argv)
    if args.flops_only:
        est = flops_estimate(args.config, docs=args.docs or 64, batch=args.batch or CONFIGS[args.config]["batch"])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        _atomic_write(Path(args.out) / "flops.json", json.dumps(est, indent=2))
        _atomic_write(Path(args.out) / "flops.md", flops_markdown(est))
        print(flops_markdown(est))
        return 0
    res = run_bench(args)
    import transformers

    res["env"] = {"python": platform.python_version(), "torch": torch.__version__,
                  "transformers": transformers.__version__, "platform": platform.platform(),
                  "cpu_threads": torch.get_num_threads(),
                  "gpu": torch.cuda.get_device_name() if str(args.device).startswith("cuda") else None,
                  "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": "python -m benchmarks.bench " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    _atomic_write(out / "results.json", json.dumps(res, indent=2, default=str))
    _atomic_write(out / "results.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
