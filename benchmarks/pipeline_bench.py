"""Benchmark of the input pipeline and batched generation (issue #17), beside their baselines.

    python -m benchmarks.pipeline_bench --out DIR [--sections prep,perchoice,generate,sakura] \
        [--sakura-root ROOT] [--prep-docs 64] [--docs 8] [--gen-docs 16] [--gen-tokens 32]

Sections (each in this one process unless said otherwise):

* ``prep``: per-doc preparation of 5-s clips read from WAV files, cold (every clip new), with a Qwen2-Audio
  processor whose Whisper window is 30 s (the real one): docs/s for 0 (in-line), 1, 2 workers, and the
  per-stage cost (decode, render, continuation split, tokenization + mel features).
* ``perchoice``: ``small`` config (``benchmarks.bench``), gender (2 choices) and animal (9 choices): ours
  (one pass per doc, batch 8, tokenization inside the timed region) vs per-choice scoring batched as
  lm-eval's ``hf`` model batches it: every (doc, choice) its own sequence (processor + full model forward,
  stock 30-s encoder window), 32 sequences per forward, sorted by length.
* ``generate``: ``small`` config, greedy generation of ``--gen-tokens`` tokens for ``--gen-docs`` prompts:
  ``interventions.generation.greedy_generate`` at batch 16 vs the previous batch-1 loop (full re-decode of
  the text at every step).
* ``sakura``: the embedded reference model on the SAKURA group (``--sakura-root``): preparation alone
  (in-line), scoring alone (items prepared beforehand), the streaming ``loglikelihood`` (default workers),
  time to the first scored batch; then the real ``lm_eval`` command on the group in a subprocess (wall,
  its peak RSS).

Results: ``DIR/pipeline.json`` and ``DIR/pipeline.md`` (written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench import CONFIGS, SR, TASKS, bench_engine, clip_lengths, make_clip, make_items

SECTIONS = ("prep", "perchoice", "generate", "sakura")


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Req:
    """The attributes of lm-eval's Instance the pipeline reads."""

    def __init__(self, args, task, doc_id, doc):
        self.args, self.task_name, self.doc_id, self.doc = args, task, doc_id, doc


def _requests_for(task: str, paths: list[str]) -> list[_Req]:
    labs, question, prefix, _ = TASKS[task]
    doc = {"user_prompt": f"{question} Possible options: {', '.join(labs)}.", "assistant_prefix": prefix}
    out = []
    for d, p in enumerate(paths):
        aux = {"audio": [p]}
        out.extend(_Req(("ctx", " " + lab, aux), task, d, doc) for lab in labs)
    return out


# ---- prep ------------------------------------------------------------------------------------------------

def bench_prep(args, res: dict[str, Any]) -> None:
    import soundfile as sf

    from audio_tasks.model import AudioLALM
    from audio_tasks.pipeline import Preparer, group_requests, prepare_all
    from audio_tasks.tiny import build

    tmp = Path(tempfile.mkdtemp(prefix="pipe_bench_"))
    mdir = build("qwen2_audio", tmp / "model")
    lm = AudioLALM(pretrained=str(mdir), device="cpu", batch_size=16)
    assert lm.engine.audio_window_s == 30.0
    rng = np.random.default_rng(0)
    n = args.prep_docs
    paths = []
    for i in range(n):
        p = tmp / f"clip{i}.wav"
        sf.write(p, make_clip(rng, 5.0, "gender").astype(np.float32), SR, subtype="PCM_16")
        paths.append(str(p))
    reqs = _requests_for("gender", paths)
    rows = {}
    lm.prep_workers = 0
    prepare_all(lm, group_requests(reqs[: 8 * 2]))  # warm-up (first calls of the processor and torch ops)
    for workers in args.prep_workers:
        best, cpu = float("inf"), float("inf")
        for _ in range(args.repeats):
            lm.engine.clear_caches()
            lm.engine._fast_tokenize = None
            lm._preparer = Preparer(lm)
            lm.prep_workers = workers
            t, c = time.perf_counter(), time.process_time()
            prepare_all(lm, group_requests(reqs))
            best = min(best, time.perf_counter() - t)
            cpu = min(cpu, time.process_time() - c)
        rows[str(workers)] = {"s": best, "docs_per_s": n / best, "ms_per_doc": 1000 * best / n,
                              "cpu_ms_per_doc": 1000 * cpu / n}
        print(f"prep workers={workers}: {n / best:.1f} docs/s ({1000 * best / n:.2f} ms/doc wall, "
              f"{1000 * cpu / n:.2f} ms/doc CPU)", flush=True)
    # stages, in-line, cold
    lm.engine.clear_caches()
    lm.engine._fast_tokenize = None
    prep = lm._preparer = Preparer(lm)
    groups = group_requests(reqs)
    st: dict[str, float] = {}
    t = time.perf_counter()
    clips = [prep.clips(g["aux"], "x") for g in groups]
    st["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    prompts = [prep.render(g["context"], g["req"].doc, 1) for g in groups]
    st["render"] = time.perf_counter() - t
    t = time.perf_counter()
    for g, p in zip(groups, prompts):
        [prep.split_continuation(p, c) for c in g["conts"]]
    st["split"] = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, n, 16):
        prep.tokenize_many(prompts[s:s + 16], [[c[0]] for c in clips[s:s + 16]])
    st["tokenize_mel"] = time.perf_counter() - t
    # the same mel + tokenization one doc per processor call (the previous way)
    lm.engine.clear_caches()
    lm.engine._fast_tokenize = None
    t = time.perf_counter()
    for p, c in zip(prompts, clips):
        lm.engine.audio_tokenizer.processor_tokenize(p, c)
    st["tokenize_mel_per_doc_call"] = time.perf_counter() - t
    res["prep"] = {"docs": n, "clip_s": 5.0, "window_s": 30.0, "workers": rows,
                   "stage_ms_per_doc": {k: 1000 * v / n for k, v in st.items()}}
    print("prep stages ms/doc:", {k: round(1000 * v / n, 2) for k, v in st.items()}, flush=True)


# ---- per-choice batched at 32 ----------------------------------------------------------------------------

@torch.no_grad()
def per_choice_batched(engine, proc, items, batch: int = 32) -> list[float]:
    """lm-eval ``hf``-style: one sequence per (doc, choice), sorted by length, ``batch`` per forward."""
    seqs = []
    for it in items:
        for cont in it.continuations:
            seqs.append((it, cont))
    order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k][1]))
    out = [0.0] * len(seqs)
    dev = engine.device
    for s in range(0, len(order), batch):
        chunk = [seqs[k] for k in order[s:s + batch]]
        enc = proc(text=[it.meta["prompt"].rstrip() for it, _ in chunk], audio=[it.tok.clips[0] for it, _ in chunk],
                   sampling_rate=SR, return_tensors="pt", padding=True)
        rows, lens = [], []
        for r, (it, cont) in enumerate(chunk):
            ids = enc["input_ids"][r][enc["attention_mask"][r].bool()]
            rows.append(torch.cat([ids, torch.tensor(cont)]))
            lens.append(len(cont))
        T = max(len(x) for x in rows)
        ids = torch.full((len(rows), T), engine.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for r, x in enumerate(rows):
            ids[r, T - len(x):] = x
            mask[r, T - len(x):] = 1
        logits = engine.model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                              input_features=enc["input_features"].to(dev, engine.dtype),
                              feature_attention_mask=enc["feature_attention_mask"].to(dev)).logits.float()
        for r, (k, n) in enumerate(zip(order[s:s + batch], lens)):
            lp = torch.log_softmax(logits[r, T - n - 1:T - 1], -1)
            tgt = ids[r, T - n:].to(lp.device)
            out[k] = float(lp[torch.arange(n), tgt].sum())
    return out


def bench_perchoice(args, res: dict[str, Any]) -> None:
    from types import SimpleNamespace

    from audio_tasks.pipeline import Preparer
    from benchmarks import bench
    from interventions.scoring import MCItem, score_items

    cfg = dict(CONFIGS["small"])
    tok_dir = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    bench_tok_dir(tok_dir)
    engine = bench_engine(cfg, "cpu", tok_dir)
    proc = engine.processor
    rng = np.random.default_rng(0)
    out = {}
    for task in ("gender", "animal"):
        clips = [make_clip(rng, s, task) for s in clip_lengths(rng, TASKS[task][3], args.docs)]
        items = make_items(engine, task, clips)

        def ours():
            """As audio_lalm prepares (batched processor call, trimmed STFT) and scores, in-line."""
            engine.clear_caches()
            prep = Preparer(SimpleNamespace(engine=engine))
            toks = prep.tokenize_many([it.meta["prompt"] for it in items], [it.tok.clips for it in items])
            fresh = [MCItem(t, it.continuations, it.meta) for t, it in zip(toks, items)]
            return [s for b in range(0, len(fresh), cfg["batch"])
                    for s in score_items(engine, fresh[b:b + cfg["batch"]])]

        t_ours = bench.timed(ours, args.repeats)
        t_pc = bench.timed(lambda: per_choice_batched(engine, proc, items, 32), args.repeats)
        a = [s.loglik for s in ours()]
        b = per_choice_batched(engine, proc, items, 32)
        flat = [x for r in a for x in r]
        # ours groups per doc; the baseline's order is (doc, choice) too
        diff = max(abs(x - y) for x, y in zip(flat, b))
        out[task] = {"choices": len(TASKS[task][0]), "ours_ms_per_doc": 1000 * t_ours / len(items),
                     "per_choice_b32_ms_per_doc": 1000 * t_pc / len(items), "speedup": t_pc / t_ours,
                     "max_abs_loglik_diff": diff}
        print(f"perchoice {task}: ours {1000 * t_ours / len(items):.1f} ms/doc, per-choice b32 "
              f"{1000 * t_pc / len(items):.1f} ms/doc, x{t_pc / t_ours:.2f} (max |diff| {diff:.2e})", flush=True)
    res["perchoice"] = out


def bench_tok_dir(tok_dir: Path) -> None:
    """The tokenizer + processor ``benchmarks.bench`` uses (from the tiny Qwen2-Audio build)."""
    from audio_tasks.tiny import build

    build("qwen2_audio", tok_dir, layers=1, hidden=32, heads=2, kv_heads=1, audio_dim=16, audio_layers=1)


# ---- generation ------------------------------------------------------------------------------------------

@torch.no_grad()
def generate_loop_batch1(engine, tok, max_new: int, until: list[str]) -> str:
    """The previous ``generate_until`` body: one prompt, KV cache, the whole text re-decoded every step."""
    tokzr = engine.tokenizer
    prep = engine.prepare([tok])
    o = engine.run(prep, use_cache=True)
    cache, new_ids, text = o.past_key_values, [], ""
    nxt = int(engine.unembed(o.last_hidden_state[:, -1]).argmax(-1))
    length = prep.lengths[0]
    for step in range(max_new):
        if nxt == tokzr.eos_token_id:
            break
        new_ids.append(nxt)
        text = tokzr.decode(new_ids, skip_special_tokens=True)
        if any(u in text for u in until):
            break
        ids = torch.tensor([[nxt]], device=engine.device)
        emb = engine.spec.embed_module(engine.model)(ids)
        mask = torch.ones((1, length + step + 1), dtype=torch.long, device=engine.device)
        pos = engine.position_rows(torch.tensor([[length + step]], device=engine.device))
        o = engine.run(prep, inputs_embeds=emb, attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True)
        cache = o.past_key_values
        nxt = int(engine.unembed(o.last_hidden_state[:, -1]).argmax(-1))
    for u in until:
        if u in text:
            text = text.split(u)[0]
    return text


def bench_generate(args, res: dict[str, Any]) -> None:
    from benchmarks import bench
    from interventions.generation import greedy_generate

    cfg = dict(CONFIGS["small"])
    tok_dir = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    bench_tok_dir(tok_dir)
    engine = bench_engine(cfg, "cpu", tok_dir)
    rng = np.random.default_rng(1)
    clips = [make_clip(rng, s, "gender") for s in clip_lengths(rng, TASKS["gender"][3], args.gen_docs)]
    items = make_items(engine, "gender", clips)
    toks = [it.tok for it in items]
    n, m = len(toks), args.gen_tokens
    until: list[str] = []  # random weights: run the full budget on every path

    last: dict[str, Any] = {}

    def loop():
        last["loop"] = [generate_loop_batch1(engine, t, m, until) for t in toks]

    def batched():
        out = []
        for s in range(0, n, 16):
            out.extend(greedy_generate(engine, toks[s:s + 16], max_new_tokens=m, until=[until] * len(toks[s:s + 16])))
        last["batched"] = out

    t_loop = bench.timed(loop, args.repeats)
    t_b = bench.timed(batched, args.repeats)
    same = last["loop"] == [g.text for g in last["batched"]]
    n_tok = sum(len(g.ids) for g in last["batched"][:16])
    res["generate"] = {"docs": n, "max_new_tokens": m, "tokens_generated_first16": n_tok,
                       "batch1_loop_docs_per_s": n / t_loop, "batch16_docs_per_s": n / t_b,
                       "speedup": t_loop / t_b, "same_text": same}
    print(f"generate: loop {n / t_loop:.2f} docs/s, batch16 {n / t_b:.2f} docs/s, x{t_loop / t_b:.2f}, "
          f"same text: {same}", flush=True)


# ---- sakura group, embedded model ------------------------------------------------------------------------

def _capture_requests(root: str, limit: int | None, batch_size: int):
    import lm_eval

    from audio_tasks.model import AudioLALM

    lm = AudioLALM(device="cpu", batch_size=batch_size)
    captured: list[Any] = []

    def ll(requests, disable_tqdm=False):
        captured.extend(requests)
        return [(0.0, False)] * len(requests)

    lm.loglikelihood = ll  # type: ignore[method-assign]
    lm_eval.simple_evaluate(model=lm, tasks=["sakura"], limit=limit, metadata={"data_root": root},
                            verbosity="ERROR")
    return captured


def bench_sakura(args, res: dict[str, Any]) -> None:
    from audio_tasks.model import AudioLALM
    from audio_tasks.pipeline import Preparer, default_workers, group_requests, prepare_all

    reqs = _capture_requests(args.sakura_root, args.sakura_limit, args.batch)
    n_docs = len(group_requests(reqs))
    lm = AudioLALM(device="cpu", batch_size=args.batch)

    def fresh(workers):
        lm.engine.clear_caches()
        lm.engine._fast_tokenize = None
        lm._preparer = Preparer(lm)
        lm.prep_workers = workers

    # warm-up: the first forward passes of a process are several times slower (one-time setup)
    fresh(0)
    warm = prepare_all(lm, group_requests(reqs)[:args.batch])
    lm.score_batches(warm, None, desc="warm-up")
    fresh(0)
    t, c = time.perf_counter(), time.process_time()
    items = prepare_all(lm, group_requests(reqs))
    t_prep, c_prep = time.perf_counter() - t, time.process_time() - c
    lm.engine.clear_caches()  # scoring pays its encoder passes; features are in the items
    by_task: dict[str, list[Any]] = {}
    for it in items:
        by_task.setdefault(it.meta["task"], []).append(it)
    t, c = time.perf_counter(), time.process_time()
    for task, its in by_task.items():
        lm.score_batches(its, None, desc=task)
    t_score, c_score = time.perf_counter() - t, time.process_time() - c
    workers = default_workers() if args.sakura_workers is None else args.sakura_workers
    fresh(workers)
    first: list[float] = []
    orig = lm.score_batches
    t0 = time.perf_counter()

    def spy(*a, **k):
        r = orig(*a, **k)
        if not first:
            first.append(time.perf_counter() - t0)
        return r

    lm.score_batches = spy  # type: ignore[method-assign]
    t0 = time.perf_counter()
    c0 = time.process_time()
    lm.loglikelihood(reqs)
    t_stream = time.perf_counter() - t0
    c_stream = time.process_time() - c0
    lm.score_batches = orig  # type: ignore[method-assign]
    row = {"docs": n_docs, "requests": len(reqs), "batch_size": args.batch, "workers": workers,
           "prep_s": t_prep, "score_s": t_score, "prep_cpu_s": c_prep, "score_cpu_s": c_score,
           "stream_loglikelihood_s": t_stream, "stream_cpu_s": c_stream,
           "stream_over_max": t_stream / max(t_prep, t_score), "serial_sum_s": t_prep + t_score,
           "first_window_scored_s": first[0] if first else None, "bench_process_peak_rss_mb": _rss_mb()}
    print(f"sakura in-process: prep {t_prep:.1f} s, score {t_score:.1f} s, streaming {t_stream:.1f} s "
          f"({t_stream / max(t_prep, t_score):.2f} x max), "
          f"first window scored after {row['first_window_scored_s']:.2f} s",
          flush=True)
    if not args.no_cli:
        out_dir = Path(tempfile.mkdtemp(prefix="pipe_lmeval_"))
        # The child reports its own peak RSS (VmHWM at exit): ru_maxrss of children would count the
        # pages it shared with this (large) process when it was forked.
        wrapper = ("import atexit, runpy, sys\n"
                   "def _peak():\n"
                   "    for l in open('/proc/self/status'):\n"
                   "        if l.startswith('VmHWM'): print('PEAK_RSS_KB', l.split()[1], file=sys.stderr)\n"
                   "atexit.register(_peak)\n"
                   "sys.argv = ['lm_eval'] + sys.argv[1:]\n"
                   "runpy.run_module('lm_eval', run_name='__main__')\n")
        cmd = [sys.executable, "-c", wrapper, "--model", "audio_lalm", "--model_args",
               f"batch_size={args.batch},prep_workers={workers}", "--tasks", "sakura", "--device", "cpu",
               "--metadata", json.dumps({"data_root": args.sakura_root}), "--output_path", str(out_dir)]
        if args.sakura_limit:
            cmd += ["--limit", str(args.sakura_limit)]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-3000:])
        # longest gap between two progress-bar refreshes of the scoring bar in the lm_eval log
        import re

        m = re.search(r"(\d+) docs prepared and scored in ([\d.]+) s", p.stdout + p.stderr)
        if m:
            row["lm_eval_loglikelihood_s"] = float(m.group(2))
        pk = re.search(r"PEAK_RSS_KB (\d+)", p.stderr)
        row.update({"lm_eval_wall_s": wall, "lm_eval_peak_rss_mb": int(pk.group(1)) / 1024 if pk else None,
                    "lm_eval_command": "lm_eval " + " ".join(cmd[3:])})
        print(f"lm_eval sakura: wall {wall:.1f} s, child peak RSS {row['lm_eval_peak_rss_mb']} MB, its "
              f"loglikelihood {row.get('lm_eval_loglikelihood_s')} s", flush=True)
    res["sakura"] = row


def _table(header: list[str], rows: list[list[Any]]) -> str:
    from analysis.tables import markdown_table

    return markdown_table(header, rows).rstrip("\n")


def to_md(res: dict[str, Any]) -> str:
    L = [f"# Pipeline benchmark ({res['date']})", "", f"Command: `{res['command']}`", "",
         f"Machine: {res['machine']}", ""]
    if "prep" in res:
        p = res["prep"]
        L += ["## Preparation, 5-s clips from WAV, 30-s Whisper window, cold", "",
              _table(["workers", "docs/s", "ms/doc (wall)", "CPU ms/doc (all threads)"],
                     [[w, f"{r['docs_per_s']:.1f}", f"{r['ms_per_doc']:.2f}",
                       f"{r.get('cpu_ms_per_doc', float('nan')):.2f}"] for w, r in p["workers"].items()])]
        stages = ", ".join(f"{k} {v:.2f}" for k, v in p["stage_ms_per_doc"].items())
        L += ["", "Stages (in-line, ms/doc): " + stages, ""]
    if "perchoice" in res:
        L += ["## Ours vs per-choice batched at 32 (small config)", "",
              _table(["task", "choices", "ours ms/doc", "per-choice b32 ms/doc", "speedup", "max abs loglik diff"],
                     [[t, r["choices"], f"{r['ours_ms_per_doc']:.1f}", f"{r['per_choice_b32_ms_per_doc']:.1f}",
                       f"{r['speedup']:.2f}x", f"{r['max_abs_loglik_diff']:.1e}"]
                      for t, r in res["perchoice"].items()])]
        L.append("")
    if "generate" in res:
        g = res["generate"]
        L += ["## generate_until: batch 16 vs the batch-1 loop (small config)", "",
              f"{g['docs']} prompts x {g['max_new_tokens']} new tokens: batch-1 loop {g['batch1_loop_docs_per_s']:.2f} "
              f"docs/s, batch 16 {g['batch16_docs_per_s']:.2f} docs/s: **{g['speedup']:.2f}x**; "
              f"same text: {g['same_text']}",
              ""]
    if "sakura" in res:
        s = res["sakura"]
        L += ["## SAKURA group, embedded model", "",
              _table(["quantity", "value"], [[k, f"{v:.2f}" if isinstance(v, float) else v] for k, v in s.items()])]
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--prep-docs", type=int, default=64)
    ap.add_argument("--prep-workers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--gen-docs", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sakura-root", default=None)
    ap.add_argument("--sakura-limit", type=int, default=None)
    ap.add_argument("--sakura-workers", type=int, default=None)
    ap.add_argument("--no-cli", action="store_true", help="skip the lm_eval subprocess run")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        ap.error(f"--sections: unknown {bad}; valid: {', '.join(SECTIONS)}")
    if "sakura" in sections and not a.sakura_root:
        ap.error("--sections sakura needs --sakura-root (a folder with data/<Track>/metadata.csv)")
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "python -m benchmarks.pipeline_bench "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch threads "
                   f"{torch.get_num_threads()}, python {platform.python_version()}, torch {torch.__version__}, "
                   f"transformers {transformers.__version__}; no GPU", "device": "cpu"}
    t = time.perf_counter()
    for s in sections:
        runs = {"prep": bench_prep, "perchoice": bench_perchoice, "generate": bench_generate, "sakura": bench_sakura}
        runs[s](a, res)
        _atomic_write(out / "pipeline.json", json.dumps(res, indent=1))
    res["wall_s"] = time.perf_counter() - t
    res["bench_process_peak_rss_mb"] = _rss_mb()
    _atomic_write(out / "pipeline.json", json.dumps(res, indent=1))
    _atomic_write(out / "pipeline.md", to_md(res))
    print(to_md(res))


if __name__ == "__main__":
    main()
