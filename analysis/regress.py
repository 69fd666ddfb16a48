"""Regression gate and paired comparison of two lm-eval runs, document by document.

Usage::

    python -m analysis regress --baseline B --candidate C [--tolerance 0.02] [--alpha 0.05] [--metric acc]
                               [--holm] [--junit FILE]
    python -m analysis compare BASELINE CANDIDATE [--metric acc] [--n-boot 10000] [--seed 0] [--json FILE]

``B`` / ``C`` are lm-eval ``--output_path`` folders written with ``--log_samples`` (or a model subfolder or a
``results_*.json`` file), each holding exactly one run.

``regress`` exit status:
    * 0 - no task regresses;
    * 1 - some task's accuracy drops by more than ``--tolerance`` AND its exact McNemar p < ``--alpha``;
    * 2 - the runs cannot be compared (different task sets, no common doc for a task, missing metric,
      unreadable or ambiguous input); the reason is printed. This wins over 1.

Pairing: every task is compared on the documents both runs scored (matched by the document's own id), and the
report prints how many were paired. Accuracies, changes and the McNemar test are computed on those paired
documents. Where the doc sets differ (e.g. a steered, automatically calibrated run scores only the evaluation
split while the unsteered run scored every doc) the output says so, with the counts, instead of failing.
The metric (``--metric``, default ``acc``; ``acc_first_token`` is the AudioLens / steering-paper criterion) is
named in the output.

Why ``--tolerance 0.02`` (with the McNemar test): a regression must be both *real* and *large enough to matter*.
The exact McNemar test on the discordant documents controls false alarms from noise (near-tie documents flipping
under different batch sizes / kernels / seeds) at ``alpha`` per task, whatever the amount of flipping; but on
large discordant sets it also flags drops too small to matter. The tolerance is that effect-size floor: on a
500-document task one binomial standard error of an accuracy near 0.5 is sqrt(0.25 / 500) = 0.022, so 0.02
(10 net documents) is about the run-to-run spread one would accept anyway. Under pure noise (documents flipping
symmetrically) a task fails with probability below alpha/2 (only drops fail; e.g. 0.019 with 40 flips, 0.024 with
160 on 500 docs) and never while fewer than 11 documents flip; a real drop such as 30 vs 12 discordant documents
(-3.6 points, p = 0.008) fails. With many tasks, ``--holm`` Holm-corrects the p-value condition across tasks.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Sequence

from .atomic import atomic_write_bytes, atomic_write_json
from .results_io import ResultsError, Run, pair_docs, read_run
from .stats import bootstrap_diff_ci, holm, mcnemar_exact

__all__ = ["register", "register_compare",
    "DEFAULT_TOLERANCE",
    "RegressReport",
    "TaskDiff",
    "add_arguments",
    "add_compare_arguments",
    "compare_main",
    "compare_runs",
    "main",
    "write_junit",
]

DEFAULT_TOLERANCE = 0.02
OK, REGRESSED, MISMATCH = 0, 1, 2


@dataclass
class TaskDiff:
    """Paired comparison of one task. ``b01`` = baseline wrong & candidate right, ``b10`` = the reverse."""

    task: str
    n: int = 0
    baseline_acc: float = math.nan
    candidate_acc: float = math.nan
    b01: int = 0
    b10: int = 0
    pvalue: float = math.nan
    p_holm: float = math.nan
    status: str = "ok"  # ok | regression | mismatch
    reason: str = ""
    n_baseline: int = 0
    n_candidate: int = 0
    note: str = ""  # e.g. "doc sets differ: ..." (the comparison is on the paired docs)

    @property
    def change(self) -> float:
        return self.candidate_acc - self.baseline_acc


@dataclass
class RegressReport:
    """Result of comparing a candidate run against a baseline run, per task."""
    baseline: str
    candidate: str
    metric: str
    tolerance: float
    alpha: float
    tasks: list[TaskDiff] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Run-level reasons for exit status 2 (e.g. task sets differ)."""

    @property
    def exit_code(self) -> int:
        if self.problems or any(t.status == "mismatch" for t in self.tasks):
            return MISMATCH
        return REGRESSED if any(t.status == "regression" for t in self.tasks) else OK


def compare_runs(
    baseline: Run,
    candidate: Run,
    metric: str = "acc",
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = 0.05,
    use_holm: bool = False,
) -> RegressReport:
    """Compare ``candidate`` with ``baseline`` task by task on paired documents (see module docstring)."""
    rep = RegressReport(baseline.label, candidate.label, metric, tolerance, alpha)
    only_b = sorted(set(baseline.tasks) - set(candidate.tasks))
    only_c = sorted(set(candidate.tasks) - set(baseline.tasks))
    if only_b:
        rep.problems.append(f"tasks missing from candidate: {', '.join(only_b)}")
    if only_c:
        rep.problems.append(f"tasks missing from baseline: {', '.join(only_c)}")
    for name in sorted(set(baseline.tasks) & set(candidate.tasks)):
        d = TaskDiff(name)
        rep.tasks.append(d)
        bt, ct = baseline.tasks[name], candidate.tasks[name]
        if not (bt.has(metric) and ct.has(metric)):
            d.status, d.reason = "mismatch", f"metric {metric!r} missing from per-sample results"
            continue
        pairing = pair_docs(bt, ct, metric)
        d.n, d.n_baseline, d.n_candidate = len(pairing.doc_ids), bt.n, ct.n
        if not pairing.doc_ids:
            d.baseline_acc, d.candidate_acc = bt.accuracy(metric), ct.accuracy(metric)
            d.status, d.reason = "mismatch", f"no common docs: doc sets differ: {pairing.describe_mismatch()}"
            continue
        d.baseline_acc, d.candidate_acc = float(pairing.a.mean()), float(pairing.b.mean())
        if not pairing.same_docs:
            d.note = (f"doc sets differ: compared on the {d.n} paired docs of {bt.n} baseline / {ct.n} candidate "
                      f"({pairing.describe_mismatch()})")
        try:
            res = mcnemar_exact(pairing.a, pairing.b)
        except ValueError:
            d.status, d.reason = "mismatch", f"metric {metric!r} is not 0/1 per document"
            continue
        d.b01, d.b10, d.pvalue = int(res["b01"]), int(res["b10"]), float(res["pvalue"])
    tested = [d for d in rep.tasks if not math.isnan(d.pvalue)]
    for d, adj in zip(tested, holm([d.pvalue for d in tested])):
        d.p_holm = adj
    for d in tested:
        p = d.p_holm if use_holm else d.pvalue
        if d.change < -tolerance and p < alpha:
            d.status = "regression"
            d.reason = (f"accuracy dropped {-100 * d.change:.1f} points (> {100 * tolerance:.1f}) with "
                        f"McNemar p={p:.3g} < {alpha}" + (" (Holm)" if use_holm else "") + f", on {d.n} paired docs")
    return rep


def format_report(rep: RegressReport) -> str:
    """Readable per-task diff table plus the verdict."""
    lines = [f"baseline : {rep.baseline}", f"candidate: {rep.candidate}",
             f"metric {rep.metric}; regression = drop > {rep.tolerance:g} and McNemar p < {rep.alpha:g}", ""]
    w = max([len(t.task) for t in rep.tasks] + [4])
    lines.append(f"{'task':<{w}}  {'n':>5}  {'base':>6}  {'cand':>6}  {'change':>7}  {'b01':>4}  {'b10':>4}  "
                 f"{'p':>8}  {'p_holm':>8}  status")
    for t in rep.tasks:
        def f(x: float, spec: str) -> str:
            return "-" if math.isnan(x) else format(x, spec)
        lines.append(f"{t.task:<{w}}  {t.n:>5}  {f(t.baseline_acc, '.4f'):>6}  {f(t.candidate_acc, '.4f'):>6}  "
                     f"{f(t.change, '+.4f'):>7}  {t.b01:>4}  {t.b10:>4}  {f(t.pvalue, '.3g'):>8}  "
                     f"{f(t.p_holm, '.3g'):>8}  {t.status.upper() if t.status != 'ok' else 'ok'}")
        if t.reason:
            lines.append(f"{'':<{w}}    -> {t.reason}")
        if t.note:
            lines.append(f"{'':<{w}}    -> {t.note}")
    lines.append(f"paired docs: {sum(t.n for t in rep.tasks)} over {len(rep.tasks)} task(s) (n = docs paired by id)")
    lines.append("(b01 = baseline wrong, candidate right; b10 = baseline right, candidate wrong)")
    lines += [f"problem: {p}" for p in rep.problems]
    code = rep.exit_code
    verdict = {OK: "OK: no task regresses", REGRESSED: "FAIL: regression detected",
               MISMATCH: "ERROR: runs are not comparable"}[code]
    lines.append(f"{verdict} (exit {code})")
    return "\n".join(lines)


def write_junit(rep: RegressReport, path: str) -> None:
    """Write a JUnit XML report atomically (``junit-xml``): one testcase per task, ``failure`` for regressions,
    ``error`` for mismatches (plus one ``runs`` testcase carrying run-level problems)."""
    from junit_xml import TestCase, TestSuite, to_xml_report_string

    cases = []
    for t in rep.tasks:
        case = TestCase(t.task, classname=f"regress.{rep.metric}", elapsed_sec=0.0)
        detail = (f"baseline={t.baseline_acc:.4f} candidate={t.candidate_acc:.4f} change={t.change:+.4f} "
                  f"n={t.n} b01={t.b01} b10={t.b10} p={t.pvalue:.4g} p_holm={t.p_holm:.4g}")
        if t.status == "regression":
            case.add_failure_info(message=t.reason, output=detail, failure_type="regression")
        elif t.status == "mismatch":
            case.add_error_info(message=t.reason, output=detail, error_type="mismatch")
        else:
            case.stdout = detail
        cases.append(case)
    if rep.problems:
        case = TestCase("runs", classname=f"regress.{rep.metric}", elapsed_sec=0.0)
        case.add_error_info(message="; ".join(rep.problems), output="\n".join(rep.problems), error_type="mismatch")
        cases.append(case)
    props = {"baseline": rep.baseline, "candidate": rep.candidate, "tolerance": str(rep.tolerance),
             "alpha": str(rep.alpha)}
    suite = TestSuite("analysis.regress", cases, properties=props)
    atomic_write_bytes(path, to_xml_report_string([suite], encoding="utf-8").encode("utf-8"))


def _error_report(reason: str, args: argparse.Namespace) -> RegressReport:
    rep = RegressReport(str(args.baseline), str(args.candidate), args.metric, args.tolerance, args.alpha)
    rep.problems.append(reason)
    return rep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``regress`` command's options to ``parser``."""
    parser.add_argument("--baseline", required=True, help="lm-eval output (folder/results file) of the reference run")
    parser.add_argument("--candidate", required=True, help="lm-eval output of the run to check")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="accuracy drop (fraction) tolerated before failing, default %(default)s")
    parser.add_argument("--alpha", type=float, default=0.05, help="McNemar significance level, default %(default)s")
    parser.add_argument("--metric", default="acc", help="per-sample 0/1 metric, default %(default)s")
    parser.add_argument("--holm", action="store_true", help="Holm-correct the McNemar p-values across tasks")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report here")


def main(args: argparse.Namespace) -> int:
    """Run the regression gate; returns the exit status (0 ok, 1 regression, 2 not comparable)."""
    try:
        base, cand = read_run(args.baseline), read_run(args.candidate)
    except ResultsError as exc:
        rep = _error_report(f"unreadable input: {exc}", args)
    else:
        rep = compare_runs(base, cand, args.metric, args.tolerance, args.alpha, getattr(args, "holm", False))
    print(format_report(rep))
    if getattr(args, "junit", None):
        write_junit(rep, args.junit)
    return rep.exit_code


# ---------------------------------------------------------------------------------------------------------
# compare: the same pairing without a verdict, plus paired bootstrap intervals
# ---------------------------------------------------------------------------------------------------------


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``compare`` command's options to ``parser``."""
    parser.add_argument("baseline", help="lm-eval output of the reference run")
    parser.add_argument("candidate", help="lm-eval output of the other run")
    parser.add_argument("--metric", default="acc", help="per-sample 0/1 metric, default %(default)s")
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples, default %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed, default %(default)s")
    parser.add_argument("--json", metavar="FILE", help="also write the comparison as JSON here (atomically)")


def compare_main(args: argparse.Namespace) -> int:
    """Per-task paired comparison: accuracies, change with 95% paired-bootstrap CI, McNemar p and Holm p.

    Exit 0 (informational, even when tasks/docs differ: those tasks are reported, not compared), 2 on
    unreadable input.
    """
    try:
        base, cand = read_run(args.baseline), read_run(args.candidate)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return MISMATCH
    rep = compare_runs(base, cand, args.metric, tolerance=math.inf)
    rows = []
    for t in rep.tasks:
        row = asdict(t) | {"change": t.change, "ci_low": math.nan, "ci_high": math.nan}
        if not math.isnan(t.pvalue):
            pairing = pair_docs(base.tasks[t.task], cand.tasks[t.task], args.metric)
            ci = bootstrap_diff_ci(pairing.a, pairing.b, n_boot=args.n_boot, seed=args.seed)
            row["ci_low"], row["ci_high"] = ci.low, ci.high
        rows.append(row)
    print(f"baseline : {rep.baseline}\ncandidate: {rep.candidate}\nmetric {rep.metric}\n")
    w = max([len(r["task"]) for r in rows] + [4])
    print(f"{'task':<{w}}  {'n':>5}  {'base':>6}  {'cand':>6}  {'change [95% CI]':>24}  {'b01':>4}  {'b10':>4}  "
          f"{'p':>8}  {'p_holm':>8}")
    for r in rows:
        if r["status"] == "mismatch":
            print(f"{r['task']:<{w}}  not compared: {r['reason']}")
            continue
        ci = f"{r['change']:+.4f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        print(f"{r['task']:<{w}}  {r['n']:>5}  {r['baseline_acc']:>6.4f}  {r['candidate_acc']:>6.4f}  {ci:>24}  "
              f"{r['b01']:>4}  {r['b10']:>4}  {r['pvalue']:>8.3g}  {r['p_holm']:>8.3g}")
        if r.get("note"):
            print(f"{'':<{w}}  note: {r['note']}")
    print(f"paired docs: {sum(r['n'] for r in rows if r['status'] != 'mismatch')} over "
          f"{sum(r['status'] != 'mismatch' for r in rows)} task(s) (n = docs paired by id; metric {rep.metric})")
    for p in rep.problems:
        print(f"note: {p}")
    if getattr(args, "json", None):
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
        atomic_write_json(args.json, {"baseline": rep.baseline, "candidate": rep.candidate, "metric": rep.metric,
                                      "tasks": clean, "problems": rep.problems})
    return OK


def _cli(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - the lead wires `python -m analysis`
    parser = argparse.ArgumentParser(prog="python -m analysis.regress", description=(__doc__ or "").split("\n")[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_cli())


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``regress`` command of ``python -m analysis`` to ``sub``."""
    s = sub.add_parser("regress", help="regression gate between two runs",
                       description=(__doc__ or "").split("\n")[0])
    add_arguments(s)
    s.set_defaults(func=main)
    return s


def register_compare(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``compare`` command of ``python -m analysis`` to ``sub``."""
    s = sub.add_parser("compare", help="paired comparison of two lm-eval --log_samples runs (McNemar, bootstrap)",
                       description=(__doc__ or "").split("\n")[0])
    add_compare_arguments(s)
    s.set_defaults(func=compare_main)
    return s
