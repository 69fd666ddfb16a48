"""``python -m analysis calibrate``: the calibration artifact (:func:`audio_tasks.calibration.run_calibration`)
and the sweep figure with random-head controls.

Outputs: ``calibration.json`` + ``calibration.safetensors``, ``calibration_controls.json``, ``figures/sweep``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis.atomic import sweep_stale_temps
from analysis.commands.common import Subparsers, add_common_arguments, load_lm, parse_metadata, progress, tasks_of
from analysis.records import write_json

__all__ = ["KINDS", "register", "run"]

KINDS = ("enrich", "layer_guided", "single_layer", "head")


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``calibrate`` command to ``sub``."""
    s = sub.add_parser("calibrate", help="calibration artifact (run_calibration) + sweep figure with random controls")
    add_common_arguments(s, split=False)
    s.add_argument("--kinds", default="enrich,layer_guided,single_layer,head",
                   help="interventions to calibrate (default %(default)s)")
    s.add_argument("--random_controls", type=int, default=5,
                   help="random head sets (seeds 0..n-1) swept like the specialists (default %(default)s; 0 = none)")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Check the calibration arguments, write the artifact, the random-head controls and the sweep figure."""
    from analysis import figures
    from audio_tasks.calibration import calibration_items, random_heads, run_calibration
    from interventions.calibrate import collect, sweep_final_layer
    from interventions.steering import layer_weights

    out = Path(args.out)
    tasks = tasks_of(args)
    md = parse_metadata(args.metadata)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise SystemExit(f"--kinds: {bad or 'nothing'} given; valid: {', '.join(KINDS)}")
    if args.random_controls < 0:
        raise SystemExit(f"--random_controls must be >= 0, got {args.random_controls}")
    lm = load_lm(args, calibrating=True)
    sweep_stale_temps(out)
    # Every calibration argument is checked before the first forward pass.
    cfg, L = lm.steer_cfg, lm.engine.num_layers
    if "enrich" in kinds and cfg.gap > L - 1:
        raise SystemExit(f"gap={cfg.gap} too large for {lm.pretrained} with {L} layers "
                         f"(enrich needs gap in 0..{L - 1}); "
                         "pass gap=N in --model_args or leave enrich out of --kinds")
    if not cfg.alphas:
        raise SystemExit("alphas: the strength grid is empty")
    for t in tasks:
        calibration_items(lm, t, md, args.limit)  # tasks, data and splits load (no forward pass yet)
    doc, _ = run_calibration(lm, tasks, out, metadata=md, kinds=kinds, limit=args.limit,
                             batch_size=args.batch_size, progress=progress(args))
    controls = None
    if args.random_controls > 0 and doc.get("heads") and "layer_guided" in kinds:
        items = []
        for t in tasks:
            items.extend(calibration_items(lm, t, md, args.limit))
        data = collect(lm.engine, items, batch_size=args.batch_size, attention=False, silence=True, heads=False,
                       progress=progress(args))
        L, H = lm.engine.num_layers, lm.spec.num_heads(lm.model)
        K = int(doc["heads"]["K"])
        alphas = doc["alphas"]
        rand, sets = {}, {}
        for seed in range(args.random_controls):
            hs = random_heads(L, H, K, seed)
            sets[str(seed)] = [list(h) for h in hs]
            rand[str(seed)] = sweep_final_layer(lm.engine, data, layer_weights(hs), alphas)
        controls = {"meta": {**doc["meta"], "analysis": "calibrate-controls"}, "K": K, "alphas": alphas,
                    "random": rand, "random_heads": sets,
                    "specialist": sweep_final_layer(
                        lm.engine, data, layer_weights([tuple(h) for h in doc["heads"]["specialists"]]), alphas)}
        write_json(out / "calibration_controls.json", controls)
    art = json.loads((out / "calibration.json").read_text())
    figures.sweep_figures(art, controls, out / "figures")
    print(f"calibration artifact in {out}")
    return 0
