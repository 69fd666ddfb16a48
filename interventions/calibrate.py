"""Calibration: everything the interventions need, computed on a held-out calibration split.

``collect`` runs each calibration item once with audio and once with matched-duration silence and
keeps, at the last prompt position: the logit-lens log-probs of every choice's first token at
every layer, the residual stream of every layer (pre-norm), the per-head outputs before o_proj,
and the audio-attention mass of every head.  ``calibrate`` then selects

* enrich: the source layer with the highest information score among incorrectly predicted samples
  (AudioLens Sec. VI-E) and the strength lam by a sweep;
* specialist heads: top-K heads by |point-biserial r| between audio-attention mass and correctness,
  layer weights w_l = (#heads in l)/K, and the strength alpha by a sweep (layer_guided, head);
* single_layer: the best (layer, alpha) on the split.

Correctness is the papers' criterion: argmax over the choices' first tokens at the last prompt
position.  The artifact is JSON plus safetensors (never pickle).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import formulas, hooks
from .arch_extras import residual_of
from .atomic import atomic_write_bytes
from .engine import Engine
from .formulas import first_token_ids
from .formulas import select_specialists as select_heads
from .formulas import specialist_correlations as point_biserial_matrix
from .scoring import last_positions, pad_choices
from .steering import Enrich, HeadSteer, layer_weights

__all__ = ["CalibrationData", "collect", "calibrate", "save_artifact", "load_artifact", "ARTIFACT_VERSION",
           "point_biserial_matrix", "select_heads", "sweep_final_layer", "info_scores", "first_token_ids"]

ARTIFACT_VERSION = 2  # 2: meta.fingerprint (model identity) is recorded and checked


@dataclass
class CalibrationData:
    """Per-item tensors collected on the calibration split."""
    lens: torch.Tensor  # (N, L+1, C) log-probs of each choice's first token, layers 0..L
    gold: torch.Tensor  # (N,)
    attn_mass: torch.Tensor | None  # (N, L, H) audio attention mass from the last position
    resid_audio: torch.Tensor | None  # (N, L+1, d) pre-norm residual at the last position, layers 0..L
    resid_silence: torch.Tensor | None  # (N, L+1, d)
    heads_audio: torch.Tensor | None  # (N, L, H, D) per-head outputs before o_proj
    heads_silence: torch.Tensor | None
    silence_logp: torch.Tensor | None  # (N, C) first-token log-probs of the silence run
    choice_ids: list[list[int]]
    golds: list[list[int]] | None = None  # per item every index that counts as correct (MMAU: same answer text)

    def correct_mask(self) -> torch.Tensor:
        """(N, C) bool: the choices that count as correct."""
        return gold_mask(self.gold, self.golds, self.lens.shape[-1])

    @property
    def correct(self) -> torch.Tensor:
        return self.correct_mask().gather(1, self.lens[:, -1].argmax(-1)[:, None])[:, 0]

    @property
    def pred(self) -> torch.Tensor:
        return self.lens[:, -1].argmax(-1)


def item_golds(item) -> list[int]:
    """Every choice index of ``item`` that counts as correct (``meta["golds"]``, else ``[meta["gold"]]``)."""
    return [int(g) for g in (item.meta.get("golds") or [item.meta["gold"]])]


def gold_mask(gold: torch.Tensor, golds: list[list[int]] | None, C: int) -> torch.Tensor:
    """(N, C) bool tensor of the choices that count as correct (``formulas.gold_mask``)."""
    return torch.from_numpy(formulas.gold_mask(golds if golds is not None else gold, C))


_pad_choices = pad_choices  # one home: interventions.scoring.pad_choices


@torch.no_grad()
def collect(engine: Engine, items: Sequence[Any], *, batch_size: int = 8, attention: bool = True,
            silence: bool = True, heads: bool = True, progress: bool = False) -> CalibrationData:
    """One audio pass (+ one silence pass) per item; see the module docstring."""
    from tqdm import tqdm

    m, s = engine.model, engine.spec
    L = engine.num_layers
    lens, attn, ra, rs, ha, hsil, slp = [], [], [], [], [], [], []
    golds = []
    all_layers = list(range(1, L + 1))
    bar = tqdm(total=len(items), desc="calibration states", disable=not progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        toks = [it.tok for it in chunk]
        prep = engine.prepare(toks)
        last = last_positions(prep)
        ctx = hooks.eager_attention(m, s) if attention else nullcontext()
        with ctx, hooks.capture_residual(m, s, [L], last) as top, \
                hooks.capture_head_inputs(m, s, all_layers if heads else [], last) as hin:
            out = engine.run(prep, output_hidden_states=True, output_attentions=attention)
        hs = out.hidden_states
        for b, it in enumerate(chunk):
            ids = torch.tensor(first_token_ids(it), device=hs[0].device)
            per_layer = []
            for l in range(L + 1):
                lp = torch.log_softmax(engine.lens_logits(hs, l, (b, -1)), -1)
                per_layer.append(lp[ids].cpu())
            lens.append(torch.stack(per_layer))
            golds.append(int(it.meta["gold"]))
        stream = s.residual_index(m)  # stacked-stream blocks (Gemma 3n): the residual stream of each entry
        resid = torch.stack([residual_of(stream, hs[l])[:, -1] for l in range(L)] + [top[L]], 1).float().cpu()
        ra.append(resid)
        if heads:
            ha.append(torch.stack([hin[l] for l in all_layers], 1).float().cpu())
        if attention:
            mass = [formulas.audio_attention_mass(a[:, :, -1, :], prep.audio_mask) for a in out.attentions]
            attn.append(torch.stack(mass, 1).cpu())  # (B, L, H)
        if silence:
            prep_s = engine.prepare(toks, silence=True)
            with hooks.capture_residual(m, s, all_layers, last) as cap, \
                    hooks.capture_head_inputs(m, s, all_layers if heads else [], last) as hin_s:
                out_s = engine.run(prep_s)
            rs.append(torch.stack([prep_s.inputs_embeds[:, -1]] + [cap[l] for l in all_layers], 1).float().cpu())
            if heads:
                hsil.append(torch.stack([hin_s[l] for l in all_layers], 1).float().cpu())
            lp_s = torch.log_softmax(engine.unembed(out_s.last_hidden_state[:, -1]), -1)
            for b, it in enumerate(chunk):
                slp.append(lp_s[b, torch.tensor(first_token_ids(it), device=lp_s.device)].cpu())
        bar.update(len(chunk))
    bar.close()
    return CalibrationData(
        lens=_pad_choices(lens), gold=torch.tensor(golds),
        attn_mass=torch.cat(attn) if attention else None,
        resid_audio=torch.cat(ra), resid_silence=torch.cat(rs) if silence else None,
        heads_audio=torch.cat(ha) if heads else None, heads_silence=torch.cat(hsil) if (heads and silence) else None,
        silence_logp=_pad_choices(slp) if silence else None,
        choice_ids=[first_token_ids(it) for it in items], golds=[item_golds(it) for it in items])


# ---- selection ------------------------------------------------------------------------------


def info_scores(lens: torch.Tensor, gold: torch.Tensor, subset: torch.Tensor | None = None,
                golds: list[list[int]] | None = None) -> torch.Tensor:
    """The information score per layer (``formulas.information_score``) as a float32 tensor; ``golds``: per
    item every index that counts as correct (MMAU), else ``gold``."""
    return torch.as_tensor(formulas.information_score(lens, golds if golds is not None else gold, subset),
                           dtype=torch.float32)


def _acc_from_final(engine: Engine, h_final: torch.Tensor, data: CalibrationData) -> float | None:
    """Accuracy with the edited final state; None (never a number computed from NaN) when a score is non-finite."""
    dev = engine.device
    logits = engine.unembed(engine.final_norm(h_final.to(dev, engine.dtype)))
    lp = torch.log_softmax(logits, -1).cpu()
    correct = 0
    for i, ids in enumerate(data.choice_ids):
        if not bool(torch.isfinite(lp[i, ids]).all()):
            return None
        golds = data.golds[i] if data.golds is not None else [int(data.gold[i])]
        correct += int(int(lp[i, ids].argmax()) in golds)
    return correct / len(data.choice_ids)


def sweep_final_layer(engine: Engine, data: CalibrationData, weights: dict[int, float],
                      alphas: Sequence[float]) -> dict[float, float | None]:
    """Accuracy of layer-guided steering for each alpha, from cached states (no re-forward: the edit is
    at the final layer).  The same functions as the forward hook (``LayerGuided``):
    ``formulas.layer_guided_direction`` and ``formulas.final_layer_steering``."""
    if data.resid_audio is None or data.resid_silence is None:
        raise ValueError("sweep_final_layer needs calibration data collected with silence=True")
    L = data.resid_audio.shape[1] - 1
    audio = {l: data.resid_audio[:, l] for l in weights}
    silence = {l: data.resid_silence[:, l] for l in weights}
    d = formulas.layer_guided_direction(weights, audio, silence)
    h_L = data.resid_audio[:, L]
    return {float(a): _acc_from_final(engine, formulas.final_layer_steering(h_L, d, a), data) for a in alphas}


def sweep_forward(engine: Engine, items: Sequence[Any], make, alphas: Sequence[float], batch_size: int = 8,
                  ) -> dict[float, float | None]:
    """Accuracy (first-token criterion) with intervention ``make(alpha)`` for each alpha."""
    from .scoring import score_items

    ivs = {float(a): make(a) for a in alphas}
    correct: dict[float, int | None] = {a: 0 for a in ivs}
    # Chunk outer, strength inner: each clip's audio prefix is run through the decoder once and
    # its KV cache shared by all strengths (interventions act at the last position only).
    engine.reserve_prefix_cache(2 * batch_size)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        for a, iv in ivs.items():
            if correct[a] is None:
                continue
            for it, sc in zip(chunk, score_items(engine, chunk, iv, share_prefix=True)):
                if not all(math.isfinite(float(x)) for x in sc.first):
                    correct[a] = None  # a non-finite score: no accuracy for this strength
                    break
                correct[a] = (correct[a] or 0) + int(int(np.argmax(sc.first)) in item_golds(it))
    return {a: (None if c is None else c / len(items)) for a, c in correct.items()}


def _best(sweep: dict[float, float | None]) -> float:
    """Highest accuracy; ties go to the smallest |alpha|. Strengths whose scores were non-finite (None) are
    never selected."""
    valid = [(a, v) for a, v in sweep.items() if v is not None]
    if not valid:
        raise ValueError(f"calibration: every strength of the grid {sorted(sweep)} gave non-finite scores")
    return sorted(valid, key=lambda kv: (-kv[1], abs(kv[0]), kv[0]))[0][0]


def _max_valid(values) -> float:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else -1.0


def calibrate(engine: Engine, items: Sequence[Any], *,
              kinds: Sequence[str] = ("enrich", "layer_guided", "single_layer", "head"),
              K: int = 20, gap: int = 5, alphas: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
              batch_size: int = 8, progress: bool = False, data: CalibrationData | None = None,
              ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Compute the calibration artifact (JSON-able dict, tensors) for the requested intervention kinds."""
    if not items:
        raise ValueError("calibration split is empty")
    L = engine.num_layers
    H = engine.spec.num_heads(engine.model)
    need_heads = any(k in kinds for k in ("layer_guided", "head"))
    if data is None:
        data = collect(engine, items, batch_size=batch_size, attention=need_heads, silence=True,
                       heads="head" in kinds, progress=progress)
    correct = data.correct
    out: dict[str, Any] = {"n_docs": len(items), "accuracy": float(correct.float().mean()),
                           "num_layers": L, "num_heads": H, "alphas": [float(a) for a in alphas]}
    tensors: dict[str, torch.Tensor] = {"lens_logprobs": data.lens.float(), "gold": data.gold,
                                        "correct": correct.to(torch.int64)}
    info_all = info_scores(data.lens, data.gold, golds=data.golds)
    wrong = ~correct
    info_wrong = info_scores(data.lens, data.gold, wrong, golds=data.golds)
    out["info_all"] = [float(x) for x in info_all]
    out["info_incorrect"] = [None if math.isnan(x) else float(x) for x in info_wrong]
    if "enrich" in kinds:
        if gap > L - 1:
            raise ValueError(f"gap {gap} too large for a model with {L} layers")
        cand = list(range(1, L - gap + 1))
        basis = info_wrong if int(wrong.sum()) > 0 else info_all
        src = max(cand, key=lambda l: (float(basis[l]), -l))
        sweep = sweep_forward(engine, items, lambda a: Enrich(src, a, gap), alphas, batch_size)
        out["enrich"] = {"source_layer": src, "gap": gap, "lam": _best(sweep), "sweep": sweep,
                         "basis": "incorrect" if int(wrong.sum()) > 0 else "all (no incorrect samples)"}
    if need_heads:
        assert data.attn_mass is not None, "head selection needs calibration data with attention mass"
        r = point_biserial_matrix(data.attn_mass, correct)
        tensors["head_corr"] = r
        tensors["attn_mass"] = data.attn_mass.float()
        spec_heads = select_heads(r, min(K, L * H))
        w = layer_weights(spec_heads)
        ranking = select_heads(r, L * H)  # the full ranking: K= at evaluation takes its top K
        out["heads"] = {"K": len(spec_heads), "specialists": [list(h) for h in spec_heads],
                        "r": [float(r[l - 1, h]) for l, h in spec_heads],
                        "ranking": [list(h) for h in ranking],
                        "layer_weights": {str(l): v for l, v in w.items()}}
        if "layer_guided" in kinds:
            sweep = sweep_final_layer(engine, data, w, alphas)
            out["layer_guided"] = {"alpha": _best(sweep), "sweep": sweep}
        if "head" in kinds:
            sweep = sweep_forward(engine, items, lambda a: HeadSteer(spec_heads, a), alphas, batch_size)
            out["head"] = {"alpha": _best(sweep), "sweep": sweep}
    if "single_layer" in kinds:
        table = {l: sweep_final_layer(engine, data, {l: 1.0}, alphas) for l in range(1, L + 1)}
        best_l = max(table, key=lambda l: (_max_valid(table[l].values()), -l))
        out["single_layer"] = {"layer": best_l, "alpha": _best(table[best_l]), "sweep": table[best_l],
                               "per_layer_best": {str(l): (_max_valid(v.values()) if _max_valid(v.values()) >= 0
                                                           else None) for l, v in table.items()}}
    return out, tensors


# ---- artifact I/O -----------------------------------------------------------------------------


def save_artifact(out_dir: str | Path, meta: dict[str, Any], result: dict[str, Any],
                  tensors: dict[str, torch.Tensor]) -> Path:
    """Write a calibration artifact (safetensors and JSON) atomically to ``out_dir``; return the folder."""
    from safetensors.torch import save

    out = Path(out_dir)
    blob = save({k: v.contiguous() for k, v in tensors.items()})
    atomic_write_bytes(out / "calibration.safetensors", blob)
    # No creation time: a rerun (e.g. after a kill) writes a byte-identical artifact.
    doc = {"version": ARTIFACT_VERSION, "meta": meta, **result}
    atomic_write_bytes(out / "calibration.json", json.dumps(doc, indent=2, sort_keys=True).encode())
    return out


def load_artifact(path: str | Path, *, model_id: str | None = None, num_layers: int | None = None,
                  num_heads: int | None = None, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load and check a calibration artifact (clear errors for missing or mismatched ones)."""
    p = Path(path)
    js = p / "calibration.json" if p.is_dir() else p
    if not js.exists():
        raise FileNotFoundError(f"calibration artifact not found: {js} (create it with `python -m analysis "
                                "calibrate --model_args ... --tasks ... --out DIR`)")
    try:
        doc = json.loads(js.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"calibration artifact {js} is not valid JSON: {e}") from None
    if doc.get("version") != ARTIFACT_VERSION:
        raise ValueError(f"calibration artifact {js} has version {doc.get('version')}, expected {ARTIFACT_VERSION}")
    if num_layers is not None and doc.get("num_layers") != num_layers:
        raise ValueError(f"calibration artifact {js} is for a model with {doc.get('num_layers')} layers; this model "
                         f"has {num_layers}")
    if num_heads is not None and doc.get("num_heads") != num_heads:
        raise ValueError(f"calibration artifact {js} is for a model with {doc.get('num_heads')} heads per layer; "
                         f"this model has {num_heads}")
    if fingerprint is not None:
        from .fingerprint import fingerprint_mismatch

        meta = doc.get("meta") or {}
        theirs_fp = meta.get("fingerprint")
        if not isinstance(theirs_fp, dict):
            raise ValueError(f"calibration artifact {js} was made for model {meta.get('model_id')!r} and records no "
                             f"model fingerprint (architecture, sizes, vocabulary, weights), so it cannot be checked "
                             f"against this model {model_id!r}; recalibrate with this version")
        diff = fingerprint_mismatch(theirs_fp, fingerprint)
        if diff:
            detail = "; ".join(f"{k}: {theirs_fp.get(k)!r} vs {fingerprint.get(k)!r}" for k in diff)
            raise ValueError(f"calibration artifact {js} was made for model {meta.get('model_id')!r}, which is not "
                             f"this model {model_id!r} (artifact vs this model, {detail})")
    elif model_id is not None:
        theirs = doc.get("meta", {}).get("model_id")
        if theirs and os.path.basename(str(theirs).rstrip("/")) != os.path.basename(str(model_id).rstrip("/")):
            raise ValueError(f"calibration artifact {js} was made for model {theirs!r}, not {model_id!r}")
    from .artifact_checks import validate_artifact

    validate_artifact(doc, js, num_layers, num_heads)
    doc["_path"] = str(js.parent)
    return doc
