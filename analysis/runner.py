"""``python -m analysis <command>``: the interpretability analyses as resumable command-line runs.

Commands (``python -m analysis <command> -h`` for all options)::

    lens       logit lens: information scores per layer/position, correct vs wrong, audio-masked last token,
               critical layers and their correlation with accuracy (AudioLens)
    trace      causal tracing: clean / silence-corrupted / patched runs, layer-wise and token-wise RR
    heads      audio-specialist heads, listening score AUC vs random heads, flip test
    calibrate  calibration artifact for the interventions (audio_tasks.calibration.run_calibration) + sweep
               figure with random-head controls
    critical   Tables II/III over several lens runs (e.g. several models)
    report     Markdown report of run folders
    compare    paired comparison of two lm-eval --log_samples runs (analysis.regress)
    mmau       MMAU accuracy by domain / difficulty / category / sub-category from a --log_samples run
    leaderboard  leaderboard of lm-eval runs (analysis.leaderboard)
    regress    regression gate between two lm-eval runs (analysis.regress)
    demo       end-to-end offline demo (analysis.demo)

This module is the parser tree: one ``argparse`` parser whose subcommands are registered by the command modules
(``register(subparsers)`` in ``analysis.commands.*`` and ``analysis.demo``; each sets its entry point with
``set_defaults(func=...)``). The model commands share their options and preamble
(``analysis.commands.common``); the per-item record store and the writers are ``analysis.records``.

Model commands share ``--model_args`` (parsed like lm-eval's, checked like ``audio_lalm``'s, loaded through
``interventions.load_engine`` as ``audio_tasks.loaded.LoadedModel``, with no lm-eval object; default empty = the
embedded reference model, as ``lm_eval --model audio_lalm``),
``--tasks``, ``--metadata``, ``--split``, ``--limit``, ``--batch_size``, ``--out``.

Outputs (every summary JSON has ``meta``: analysis, model, revision, model_args, dtype, tasks, split, seed,
split_seed, metadata, limit, package_version, prompt_formats, num_layers, num_heads):

* lens: ``lens_records.jsonl`` (per item: gold, choices, choice first-token ids, prediction, the tokens at the
  positions, log-probs (L+1 x C) at ``last`` / ``penultimate`` / ``masked_last``), ``lens_summary.json`` (per task:
  accuracy, I^l per position for all / correct / incorrect items, critical layers; ``critical``: rows, Table II,
  Table III), ``lens_info.csv`` (long format), ``critical.csv``, ``figures/lens_{layers,correct_wrong,positions}``;
* trace: ``trace_records.jsonl`` (per item: P_clean, P_corrupted, predictions, exclusion reasons, layer-wise
  P/RR, token-wise positions/tokens/segments/P/RR), ``trace_summary.json`` (per task: exclusion counts, RR by
  layer mean/std/sem/n, by segment x layer, by position from the end), ``trace_layer.csv``,
  ``trace_segments.csv``, ``trace_items.csv``, ``figures/trace_{rr_layers,tokens_<task>,segments_<task>}``;
* heads: ``heads_records.jsonl`` (per item and split: audio mass L x H, first-token log-probs with audio and
  silence, correct, flip), ``heads_summary.json`` (r matrix, specialists with r/p, AUC vs random head sets,
  flip test), ``head_corr.csv``, ``heads_scores.csv`` (evaluation split: listening score), ``figures/heads_corr``;
* calibrate: ``calibration.json`` + ``calibration.safetensors`` (the artifact), ``calibration_controls.json``
  (layer-guided sweeps of random head sets, seeds 0..n-1, and of the specialists on the same data),
  ``figures/sweep``;
* critical: ``critical_tables.json``, ``critical_rows.csv``, ``critical_table_ii.csv``, ``critical_table_iii.csv``;
* report: ``report.md`` (+ ``report_figures/`` when several trace runs are combined).

Resuming: per-item records are appended (one JSON line each, fsynced) to ``<out>/<analysis>_records.jsonl`` as
items finish, keyed by task + clip id; rerunning the same command skips finished items and recomputes the
summaries from the records, so an interrupted and resumed run writes the same files as an uninterrupted one
(items are batched in fixed chunks of the item list, so every item sees the same batch whether resumed or not).
``<out>/<analysis>_run.json`` pins the settings; a rerun with other settings into the same folder is refused
(``--overwrite`` starts afresh).  Summaries (JSON, CSV, figures) are written atomically.
"""

from __future__ import annotations

import sys
from typing import Sequence

from analysis import demo, leaderboard, mmau_breakdown, regress
from analysis.commands import calibrate, critical, heads, lens, report, trace
from analysis.commands.common import Register, build_tree, run_parsed

__all__ = ["COMMANDS", "build_parser", "main"]

# The commands in the order of ``python -m analysis --help``.
COMMANDS: tuple[Register, ...] = (lens.register, trace.register, heads.register, calibrate.register,
                                  critical.register, report.register, regress.register_compare, leaderboard.register,
                                  regress.register, mmau_breakdown.register, demo.register)


def build_parser():
    """Build the ``python -m analysis`` argument parser with all subcommands."""
    return build_tree(COMMANDS, description=(__doc__ or "").split("\n")[0],
                      epilog="Commands: lens, trace, heads, calibrate, critical, report, compare, "
                             "leaderboard, regress, mmau, demo")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m analysis``; return the exit code (2 and the help when no command is given)."""
    return run_parsed(build_parser(), list(sys.argv[1:] if argv is None else argv))
