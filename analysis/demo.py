"""End-to-end offline demo on the embedded reference model: ``python -m analysis demo --out DIR``.

Everything runs on CPU in a few minutes, with no download: the synthetic SAKURA-format dataset
(:func:`audio_tasks.synthetic.ensure_dataset`), the embedded reference model (``audio_lalm`` without
``pretrained``) and the ``demo`` tasks (``demo_gender``, ``demo_language``, ``demo_emotion``, ``demo_animal``).

Steps (outputs under ``DIR``):

1. ``calibration/``: ``python -m analysis calibrate`` (layer-guided steering,
   :func:`audio_tasks.calibration.run_calibration`) on the *calibration* split of the demo tasks, with
   ``--random_controls`` random head sets for the sweep figure;
2. ``lm_eval/none/`` and ``lm_eval/layer_guided/``: ``lm_eval.simple_evaluate`` (``log_samples``, written by
   ``EvaluationTracker`` exactly like ``--output_path``) on the *evaluation* split, without steering and with
   ``steer=layer_guided,calibration=DIR/calibration``;
3. ``lens/``, ``trace/``, ``heads/``: the analyses of ``python -m analysis lens|trace|heads``;
4. ``report.md``: ``python -m analysis report`` over the calibration and analysis folders, plus ``demo_summary.json``.

Every figure of the README's gallery (``docs/figures``) is one of this command's figures
(``tests/test_readme_first_hour.py`` checks the names).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from analysis.atomic import atomic_write_text
from analysis.commands import calibrate, heads, lens, trace
from analysis.commands import report as report_command
from analysis.commands.common import Subparsers, build_tree, run_parsed

TASKS = ["demo_gender", "demo_language", "demo_emotion", "demo_animal"]
# The ``python -m analysis`` commands the demo runs (its steps 1, 3 and 4).
STEPS = (calibrate.register, lens.register, trace.register, heads.register, report_command.register)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command's options to ``p``."""
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--limit", type=int, default=24, help="documents per task for lm-eval runs (default %(default)s)")
    p.add_argument("--analysis_limit", type=int, default=8,
                   help="documents per task for lens / trace / heads (default %(default)s)")
    p.add_argument("--calibration_limit", type=int, default=16,
                   help="calibration documents per task (default %(default)s)")
    p.add_argument("--random_controls", type=int, default=3,
                   help="random head sets swept next to the specialists in calibration/figures/sweep "
                        "(default %(default)s)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--skip_analyses", action="store_true", help="only calibration + the two lm-eval runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--pretrained", default=None, help="model directory (default: the embedded reference model)")


def register(sub: Subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` command to ``sub``."""
    s = sub.add_parser("demo", help="end-to-end demo", description=(__doc__ or "").split("\n")[0])
    add_arguments(s)
    s.set_defaults(func=main)
    return s


def _step(name: str, t0: float) -> None:
    print(f"[demo] {name} ({time.time() - t0:.0f}s)", flush=True)


def _evaluate(model_args: str, out: Path, limit: int | None, batch_size: int) -> dict:
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out))
    res = lm_eval.simple_evaluate(model="audio_lalm", model_args=model_args, tasks=["demo"], limit=limit,
                                  batch_size=batch_size, log_samples=True, evaluation_tracker=tracker)
    if res is None:
        return {}
    samples = res.pop("samples", {})
    tracker.save_results_aggregated(results=res, samples=samples)
    for task in res.get("configs", {}):
        if task in samples:
            tracker.save_results_samples(task_name=task, samples=samples[task])
    return {t: {k: v for k, v in r.items() if k.startswith(("acc", "balanced_acc")) and "stderr" not in k
                and not k.startswith("acc_label")}
            for t, r in res.get("results", {}).items()}


def _analysis(argv: list[str]) -> int:
    """Run one ``python -m analysis`` step in this process, with the commands' own parsers and entry points."""
    print("[demo] python -m analysis " + " ".join(argv), flush=True)
    parser = build_tree(STEPS)
    return run_parsed(parser, argv)


def _run_analyses(args: argparse.Namespace, base: str, out: Path, summary: dict, folders: list[str],
                  t0: float) -> None:
    """Step 3 of the demo: lens, trace and heads; record them in ``summary`` and append the folders of the
    successful ones to ``folders``."""
    common = ["--model_args", base, "--tasks", ",".join(TASKS),
              "--limit", str(args.analysis_limit), "--batch_size", str(args.batch_size), "--no_progress"]
    plan = [("lens", ["--split", "evaluation"]),
            ("trace", ["--split", "evaluation"]),
            ("heads", ["--n_random", "2", "--K", "4"])]
    for cmd, extra in plan:
        try:
            rc = _analysis([cmd, *common, *extra, "--out", str(out / cmd)])
        except Exception as e:  # keep the demo going; the summary records the failure, the exit code is 1
            rc = f"error: {type(e).__name__}: {e}"
        summary.setdefault("analyses", {})[cmd] = rc
        if rc == 0:
            folders.append(str(out / cmd))
        _step(f"{cmd} -> {out / cmd} (rc={rc})", t0)


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Run the demo pipeline (calibration, two lm-eval runs, analyses) into ``--out``; return the exit code."""
    if isinstance(argv, argparse.Namespace):
        args = argv
    else:
        p = argparse.ArgumentParser(prog="python -m analysis demo", description=(__doc__ or "").split("\n")[0])
        add_arguments(p)
        args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    t0 = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from audio_tasks.synthetic import ensure_dataset

    data_root = ensure_dataset()
    _step(f"synthetic dataset at {data_root}", t0)

    # 1. calibration (calibration split of the demo tasks) + sweep figure with random-head controls
    base = f"device={args.device},dtype=float32" + (f",pretrained={args.pretrained}" if args.pretrained else "")
    cal_dir = out / "calibration"
    # K=4 of the reference model's 16 heads (the default K=20 would take them all, and random head sets with them)
    rc = _analysis(["calibrate", "--model_args", f"{base},K=4", "--tasks", ",".join(TASKS), "--kinds", "layer_guided",
                    "--limit", str(args.calibration_limit), "--batch_size", str(args.batch_size),
                    "--random_controls", str(args.random_controls), "--no_progress", "--out", str(cal_dir)])
    if rc != 0 or not (cal_dir / "calibration.json").exists():
        raise SystemExit(f"demo: calibration failed (rc={rc})")
    _step(f"calibration written to {cal_dir}", t0)

    # 2. lm-eval without and with steering
    summary: dict = {"out": str(out), "tasks": TASKS, "limit": args.limit}
    runs = {"none": base, "layer_guided": f"{base},steer=layer_guided,calibration={cal_dir}"}
    summary["lm_eval"] = {}
    for name, margs in runs.items():
        summary["lm_eval"][name] = _evaluate(margs, out / "lm_eval" / name, args.limit, args.batch_size)
        _step(f"lm-eval steer={name} -> {out / 'lm_eval' / name}", t0)

    # 3. analyses (if the modules exist)
    folders = [str(cal_dir)]
    if not args.skip_analyses:
        _run_analyses(args, base, out, summary, folders, t0)

    # 4. report
    report = out / "report.md"
    if folders:
        try:
            rc = _analysis(["report", *folders, "--out", str(report)])
        except Exception as e:
            rc = f"error: {type(e).__name__}: {e}"
        summary["report_rc"] = rc
    if not report.exists():
        lines = ["# Demo report (reference model, synthetic demo tasks)", ""]
        for name, res in summary["lm_eval"].items():
            lines.append(f"## lm-eval, steer={name}")
            for t, r in res.items():
                lines.append(f"- {t}: " + ", ".join(f"{k}={v:.3f}" for k, v in r.items() if isinstance(v, float)))
            lines.append("")
        atomic_write_text(report, "\n".join(lines) + "\n")
    summary["seconds"] = round(time.time() - t0, 1)
    summary["report"] = str(report)
    failed = [cmd for cmd, rc in summary.get("analyses", {}).items() if rc != 0]
    if summary.get("report_rc", 0) != 0:
        failed.append("report")
    summary["failed"] = failed
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    if failed:
        print(f"[demo] FAILED steps: {', '.join(failed)} (see {out / 'demo_summary.json'}); report: {report}",
              flush=True)
        return 1
    print(f"[demo] done in {summary['seconds']}s; report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
