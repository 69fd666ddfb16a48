"""Causal tracing of audio-text fusion (Chen, Huang & Lee, Sec. 3).

Three kinds of runs per item, all on the same prompt:

* clean: the original audio;
* corrupted: the audio replaced by matched-duration silence (``engine.prepare(toks, silence=True)``: same
  audio-token count, same prompt, same positions);
* patched: a corrupted run in which some hidden states (outputs of decoder block l, pre-norm, at some
  positions) are replaced by the clean run's.

The target is the probability of the gold label's first token at the last prompt position (softmax over the
whole vocabulary).  Recovery rate ``RR = (P_patched - P_corrupted) / (P_clean - P_corrupted)``.  Items are
excluded (counted, reported, and not patched) when the clean run is wrong, the corrupted run is right (both by
the argmax over the choices' first tokens), or ``P_clean <= P_corrupted``.

* Layer-wise tracing (Sec. 3.2): for each layer l, all TEXT positions (non-audio, non-padding) of block l's
  output are replaced by the clean states; the forward then continues normally.
* Token-wise tracing (Sec. 3.3): one text position x one layer.

Efficiency.  Text positions *before the first audio token* have identical states in the clean and corrupted
runs (causal attention: they never see the audio), so patching them changes nothing; they are left out of the
patch sets and of the token-wise map.  Every patched run therefore agrees with the corrupted run on all
positions before its first patched position P, so the corrupted run's prefix [0, P) (which holds all the audio
tokens) is computed once per item and reused as a KV cache; the patched variants run only on the suffix
(a few dozen text tokens), many variants per forward (one batch row each, the cache repeated along the batch
dim), with per-row patches installed through ``interventions.hooks.layer_hook``.  ``prefix_cache=False`` runs
every variant on the full sequence instead (same values within float tolerance).

Segments (token-wise summary, Sec. 3.3), derived from the rendered prompt itself:

* ``pre_audio``: text before the (last) audio clip: system prompt, chat headers (not traced, see above);
* ``audio``: the audio placeholder positions;
* the *prompt region* = positions after the last audio token, split into
  - ``last``: the final position;
  - ``object``: tokens overlapping the option-label span.  The span is found in the rendered prompt (token
    character offsets from the fast tokenizer): for each of the doc's choices, its LAST case-insensitive,
    word-bounded occurrence inside the prompt region and before the assistant prefix (before the last token
    when the prefix is unknown); when every choice is found, the span runs from the earliest of these
    occurrences to the end of the latest (so "male, female" includes the comma).  No span (e.g. P1/P2 prompts
    without options) -> no object tokens;
  - ``early``: prompt-region tokens ending at or before the span start (with no span: before the assistant
    prefix; all of them when the prefix is unknown);
  - ``late``: the remaining prompt-region tokens before the last one (e.g. "The speaker's gender").
"""

from __future__ import annotations

import copy
import re
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from interventions import hooks
from interventions.engine import Engine, Prepared

__all__ = ["TraceRun", "prepare_trace", "exclusions", "patched_probs", "recovery_rate", "layer_variants",
           "token_positions", "prompt_segments", "trace_item", "SEGMENTS", "summarize"]

SEGMENTS = ("early", "object", "late", "last")
EXCLUSIONS = ("clean_wrong", "corrupted_right", "p_clean_le_p_corrupted")

Variant = dict  # {layer (1..L): sequence of positions}


@dataclass
class TraceRun:
    """Clean and corrupted runs of one item (batch of one, no padding)."""

    prep_clean: Prepared
    prep_corrupt: Prepared
    clean_states: dict[int, torch.Tensor]  # layer -> (1, T, d) output of block l in the clean run (pre-norm)
    target: int  # token id of the gold label's first token
    gold: int
    choice_ids: list[int]
    p_clean: float
    p_corrupted: float
    logp_clean: list[float]  # choices' first-token log-probs, clean run
    logp_corrupted: list[float]
    golds: list[int] | None = None  # every choice index that counts as correct (MMAU: same answer text)

    @property
    def correct_set(self) -> set[int]:
        return set(self.golds) if self.golds else {self.gold}

    @property
    def num_layers(self) -> int:
        return len(self.clean_states)

    @property
    def seq_len(self) -> int:
        return self.prep_clean.seq_len

    @property
    def audio_positions(self) -> list[int]:
        return self.prep_clean.audio_mask[0].nonzero().squeeze(-1).tolist()

    @property
    def text_positions(self) -> list[int]:
        text = ~self.prep_clean.audio_mask[0] & self.prep_clean.attention_mask[0].bool()
        return text.nonzero().squeeze(-1).tolist()


def _last_probs(engine: Engine, last_hidden: torch.Tensor) -> torch.Tensor:
    """Softmax over the vocabulary from already-normed final states (B, d) -> (B, V) float32."""
    return torch.softmax(engine.unembed(last_hidden), -1)


@torch.no_grad()
def prepare_trace(engine: Engine, item: Any) -> TraceRun:
    """Run the clean pass (capturing every block's output) and the corrupted pass of one item."""
    m, s = engine.model, engine.spec
    L = engine.num_layers
    ids = [int(c[0]) for c in item.continuations]
    gold = int(item.meta["gold"])
    prep_c = engine.prepare([item.tok])
    with hooks.capture_residual(m, s, list(range(1, L + 1))) as cap:
        out_c = engine.run(prep_c)
    clean_states = {l: cap[l] for l in range(1, L + 1)}
    lc = torch.log_softmax(engine.unembed(out_c.last_hidden_state[:, -1]), -1)[0]
    prep_x = engine.prepare([item.tok], silence=True)
    out_x = engine.run(prep_x)
    lx = torch.log_softmax(engine.unembed(out_x.last_hidden_state[:, -1]), -1)[0]
    pc = _last_probs(engine, out_c.last_hidden_state[:, -1])[0]
    px = _last_probs(engine, out_x.last_hidden_state[:, -1])[0]
    idx = torch.tensor(ids, device=lc.device)
    return TraceRun(prep_c, prep_x, clean_states, ids[gold], gold, ids,
                    float(pc[ids[gold]]), float(px[ids[gold]]),
                    [float(v) for v in lc[idx].double()], [float(v) for v in lx[idx].double()],
                    [int(g) for g in (item.meta.get("golds") or [gold])])


def exclusions(run: TraceRun) -> list[str]:
    """Reasons to exclude an item (empty list = included)."""
    out = []
    if int(np.argmax(run.logp_clean)) not in run.correct_set:
        out.append("clean_wrong")
    if int(np.argmax(run.logp_corrupted)) in run.correct_set:
        out.append("corrupted_right")
    if not run.p_clean > run.p_corrupted:
        out.append("p_clean_le_p_corrupted")
    return out


def recovery_rate(p_patched: float | np.ndarray, run: TraceRun) -> float | np.ndarray:
    """Recovery rate of ``p_patched`` for this run (``interventions.formulas.recovery_rate``)."""
    from interventions.formulas import recovery_rate as rr

    return rr(p_patched, run.p_clean, run.p_corrupted)


def layer_variants(run: TraceRun) -> list[Variant]:
    """Layer-wise tracing: variant l patches block l's output at all text positions after the first audio
    token (earlier text positions are identical in both runs, see the module docstring)."""
    audio = run.audio_positions
    first = audio[0] if audio else -1
    pos = [p for p in run.text_positions if p > first]
    return [{l: pos} for l in range(1, run.num_layers + 1)]


def token_positions(run: TraceRun) -> list[int]:
    """Positions of the token-wise map: text positions after the last audio token."""
    audio = run.audio_positions
    last_audio = audio[-1] if audio else -1
    return [p for p in run.text_positions if p > last_audio]


@torch.no_grad()
def patched_probs(engine: Engine, run: TraceRun, variants: Sequence[Variant], *, rows: int = 16,
                  prefix_cache: bool = True) -> np.ndarray:
    """P(gold first token) at the last position for each patched variant of the corrupted run.

    A variant is ``{layer: positions}``: block ``layer``'s output at those positions is replaced by the
    clean run's.  ``rows`` variants run per forward; with ``prefix_cache`` the corrupted prefix before the
    earliest patched position is computed once and reused (see the module docstring).
    """
    if not variants:
        return np.zeros(0)
    m, s = engine.model, engine.spec
    prep = run.prep_corrupt
    T = prep.seq_len
    dev = prep.input_ids.device
    starts = [min(int(p) for ps in v.values() for p in ps) for v in variants if any(len(ps) for ps in v.values())]
    P = min(starts) if starts else T - 1
    P = max(0, min(P, T - 1))
    if not prefix_cache:
        P = 0
    cache = None
    if P > 0:
        out_p = engine.run(prep, inputs_embeds=prep.inputs_embeds[:, :P], attention_mask=prep.attention_mask[:, :P],
                           position_ids=prep.position_ids[..., :P], use_cache=True, input_ids=prep.input_ids[:, :P])
        cache = out_p.past_key_values
    S = T - P
    result = np.zeros(len(variants))
    for start in range(0, len(variants), rows):
        chunk = variants[start:start + rows]
        R = len(chunk)
        masks: dict[int, torch.Tensor] = {}
        for r, v in enumerate(chunk):
            for l, ps in v.items():
                if not len(ps):
                    continue
                if l not in masks:
                    masks[l] = torch.zeros((R, S), dtype=torch.bool, device=dev)
                idx = torch.as_tensor([int(p) - P for p in ps], dtype=torch.long, device=dev)
                if (idx < 0).any():
                    raise ValueError("patched position before the cached prefix")
                masks[l][r, idx] = True
        emb = prep.inputs_embeds[:, P:].expand(R, -1, -1)
        pos = prep.position_ids[..., P:]
        pos = pos.expand(*pos.shape[:-2], R, S)
        attn = prep.attention_mask.expand(R, -1)
        kv = None
        if cache is not None:
            kv = copy.deepcopy(cache)
            kv.batch_repeat_interleave(R)
        with ExitStack() as st:
            for l, mk in masks.items():
                clean = run.clean_states[l][:, P:]

                def fn(h: torch.Tensor, mk=mk, clean=clean) -> torch.Tensor:
                    return torch.where(mk.to(h.device)[:, :, None], clean.to(h.device, h.dtype), h)

                st.enter_context(hooks.layer_hook(m, s, l, fn))
            out = engine.run(prep, inputs_embeds=emb, attention_mask=attn, position_ids=pos,
                             past_key_values=kv, use_cache=kv is not None,
                             input_ids=prep.input_ids[:, P:].expand(R, -1))
        probs = _last_probs(engine, out.last_hidden_state[:, -1])[:, run.target]
        result[start:start + R] = probs.double().cpu().numpy()
        del out, kv
    return result


# ---- segments ---------------------------------------------------------------------------------------------


def _offsets(engine: Engine, item: Any, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered prompt and the character span of every position (audio runs share one span)."""
    aid = engine.audio_token_id
    collapsed: list[int] = []
    where: list[int] = []
    for i, t in enumerate(ids):
        if t == aid and i > 0 and ids[i - 1] == aid:
            where.append(len(collapsed) - 1)
            continue
        collapsed.append(t)
        where.append(len(collapsed) - 1)
    tok = engine.tokenizer
    text = item.meta.get("prompt") if isinstance(item.meta, dict) else None
    spans: list[tuple[int, int]] | None = None
    if text:
        try:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            if list(enc["input_ids"]) == collapsed:
                spans = [(int(o[0]), int(o[1])) for o in enc["offset_mapping"]]
        except (NotImplementedError, TypeError, ValueError):
            spans = None
    if spans is None:  # fall back: decode token by token
        pieces = [tok.decode([t]) for t in collapsed]
        text, spans, c = "", [], 0
        for p in pieces:
            spans.append((c, c + len(p)))
            text += p
            c += len(p)
    return str(text), [spans[w] for w in where]


def _doc_field(item: Any, name: str) -> Any:
    meta = item.meta if isinstance(item.meta, dict) else {}
    if meta.get(name) is not None:
        return meta[name]
    doc = meta.get("doc")
    if isinstance(doc, dict):
        return doc.get(name)
    return None


def prompt_segments(engine: Engine, item: Any, input_ids: Sequence[int] | None = None) -> list[str]:
    """Segment name of every position of the item's (unpadded) token sequence; see the module docstring."""
    ids = [int(t) for t in (item.tok.input_ids if input_ids is None else input_ids)]
    T = len(ids)
    aid = engine.audio_token_id
    audio = [i for i, t in enumerate(ids) if t == aid]
    last_audio = audio[-1] if audio else -1
    seg = ["audio" if t == aid else "pre_audio" for t in ids]
    region = [i for i in range(last_audio + 1, T)]
    if not region:
        return seg
    seg[T - 1] = "last"
    text, spans = _offsets(engine, item, ids)
    r0 = spans[region[0]][0]
    last_start = spans[T - 1][0]
    limit = last_start
    prefix = _doc_field(item, "assistant_prefix")
    if prefix and prefix.strip():
        stripped = text.rstrip()
        k = stripped.rfind(prefix.strip())
        if k >= r0:
            limit = min(limit, k)
    choices = _doc_field(item, "choices") or []
    span = None
    found = []
    for c in choices:
        c = str(c).strip()
        if not c:
            found = []
            break
        pat = re.compile(r"(?<!\w)" + re.escape(c) + r"(?!\w)", re.IGNORECASE)
        hits = [mt for mt in pat.finditer(text, r0, limit)]
        if not hits:
            found = []
            break
        found.append((hits[-1].start(), hits[-1].end()))
    if found and choices:
        span = (min(a for a, _ in found), max(b for _, b in found))
    for i in region[:-1]:
        a, b = spans[i]
        if span is not None:
            if a < span[1] and b > span[0]:
                seg[i] = "object"
            elif b <= span[0]:
                seg[i] = "early"
            else:
                seg[i] = "late"
        else:
            seg[i] = "early" if b <= limit else "late"
    return seg


# ---- one item ---------------------------------------------------------------------------------------------


def trace_item(engine: Engine, item: Any, *, layerwise: bool = True, tokenwise: bool = True, rows: int = 16,
               force: bool = False, prefix_cache: bool = True) -> dict[str, Any]:
    """Clean, corrupted and patched runs of one item -> a JSON-able record.

    Excluded items get no patched runs unless ``force``.
    """
    run = prepare_trace(engine, item)
    reasons = exclusions(run)
    L = run.num_layers
    rec: dict[str, Any] = {"gold": run.gold, "target_token": engine.tokenizer.decode([run.target]),
                           "p_clean": run.p_clean, "p_corrupted": run.p_corrupted,
                           "pred_clean": int(np.argmax(run.logp_clean)),
                           "pred_corrupted": int(np.argmax(run.logp_corrupted)),
                           "logp_clean": run.logp_clean, "logp_corrupted": run.logp_corrupted,
                           "excluded": reasons, "num_layers": L, "seq_len": run.seq_len,
                           "n_audio": len(run.audio_positions)}
    if reasons and not force:
        return rec
    if layerwise:
        p = patched_probs(engine, run, layer_variants(run), rows=rows, prefix_cache=prefix_cache)
        rec["layer_p"] = [float(x) for x in p]
        rec["layer_rr"] = [float(x) for x in np.asarray(recovery_rate(p, run))]
    if tokenwise:
        positions = token_positions(run)
        segs = prompt_segments(engine, item)
        variants = [{l: [i]} for i in positions for l in range(1, L + 1)]
        p = patched_probs(engine, run, variants, rows=rows, prefix_cache=prefix_cache).reshape(len(positions), L)
        ids = item.tok.input_ids.tolist()
        rec["token"] = {"positions": positions, "rel_positions": [i - run.seq_len for i in positions],
                        "tokens": [engine.tokenizer.decode([ids[i]]) for i in positions],
                        "segments": [segs[i] for i in positions],
                        "p": [[float(x) for x in row] for row in p],
                        "rr": [[float(x) for x in row] for row in np.asarray(recovery_rate(p, run))]}
    return rec


# ---- aggregation ------------------------------------------------------------------------------------------


def _tolist(a: np.ndarray) -> Any:
    """Nested lists with NaN/inf -> None (JSON-friendly)."""
    a = np.asarray(a, dtype=float)
    if a.ndim == 0:
        return float(a) if np.isfinite(a) else None
    return [_tolist(x) for x in a]


def _nan_stats(a: np.ndarray) -> dict[str, Any]:
    """Mean / std (ddof=1) / sem (``scipy.stats.sem``) / count over axis 0, ignoring NaNs."""
    import warnings

    from scipy.stats import sem as _sem

    n = np.isfinite(a).sum(0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        mean = np.nanmean(a, 0)
        std = np.nanstd(a, 0, ddof=1) if a.shape[0] > 1 else np.full(a.shape[1:], np.nan)
        sem = _sem(a, axis=0, ddof=1, nan_policy="omit") if a.shape[0] > 1 else np.full(a.shape[1:], np.nan)
    return {"mean": _tolist(mean), "std": _tolist(std), "sem": _tolist(sem), "n": np.asarray(n).astype(int).tolist()}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-item trace records of one task: exclusion counts, RR by layer (mean/std/sem over
    included items), RR by segment x layer (mean over the segment's positions per item, then over items) and
    RR by position counted from the end (for prompts shared by all items)."""
    n = len(records)
    counts = {k: sum(1 for r in records if k in r["excluded"]) for k in EXCLUSIONS}
    counts["excluded"] = sum(1 for r in records if r["excluded"])
    inc = [r for r in records if not r["excluded"]]
    out: dict[str, Any] = {"n": n, "n_included": len(inc), "exclusions": counts}
    if not inc:
        return out
    L = int(inc[0]["num_layers"])
    out["num_layers"] = L
    out["p_clean_mean"] = float(np.mean([r["p_clean"] for r in inc]))
    out["p_corrupted_mean"] = float(np.mean([r["p_corrupted"] for r in inc]))
    lw = [r["layer_rr"] for r in inc if r.get("layer_rr") is not None]
    if lw:
        out["layer"] = _nan_stats(np.asarray(lw, dtype=float))
    tw = [r["token"] for r in inc if r.get("token")]
    if tw:
        seg_stats = {}
        for sname in SEGMENTS:
            per_item = []
            for t in tw:
                rows = [row for row, sg in zip(t["rr"], t["segments"]) if sg == sname]
                if rows:
                    per_item.append(np.mean(np.asarray(rows, dtype=float), 0))
            if per_item:
                seg_stats[sname] = _nan_stats(np.asarray(per_item))
        out["segments"] = seg_stats
        depth = max(len(t["rel_positions"]) for t in tw)
        grid = np.full((len(tw), depth, L), np.nan)
        for k, t in enumerate(tw):
            for row, rel in zip(t["rr"], t["rel_positions"]):
                grid[k, depth + rel] = row
        ref = tw[0]
        shared = all(t["tokens"] == ref["tokens"] for t in tw)
        pos_stats = _nan_stats(grid)
        out["positions"] = {"rel_positions": list(range(-depth, 0)), "tokens": ref["tokens"] if shared else None,
                            "segments": ref["segments"] if shared else None, "tokens_shared": shared,
                            "mean": pos_stats["mean"], "n": pos_stats["n"]}
    return out
