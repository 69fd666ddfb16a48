"""analysis.results_io on lm-eval 0.4.13 output folders written by hand in a temporary folder.

Each test writes ``results_<date>.json`` and ``samples_<task>_<date>.jsonl`` files in lm-eval's layout with known
per-document values and checks what the reader returns against those values (tests/test_leaderboard.py covers
folders written by lm-eval itself).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.results_io import (
    EMBEDDED_MODEL,
    NON_INTERVENTION_KEYS,
    ResultsError,
    format_model_args,
    is_unsteered,
    pair_docs,
    parse_model_args,
    read_many,
    read_run,
    read_runs,
    split_model_args,
)

D1, D2 = "2025-01-01T10-00-00.000001", "2025-01-02T10-00-00.000002"


def _write(folder: Path, date: str, model_args: Any, tasks: dict[str, list[dict[str, Any]]], *,
           acc: dict[str, float] | None = None, n: dict[str, int] | None = None) -> Path:
    """Write one results file and a samples file per task; ``tasks[t]`` are sample rows (``acc`` etc.)."""
    folder.mkdir(parents=True, exist_ok=True)
    results, n_samples = {}, {}
    for t, rows in tasks.items():
        with open(folder / f"samples_{t}_{date}.jsonl", "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
        kept = [r for r in rows if r.get("filter", "none") == "none"]
        mean = sum(r["acc"] for r in kept) / len(kept)
        results[t] = {"alias": t, "acc,none": (acc or {}).get(t, mean), "acc_stderr,none": 0.1}
        n_samples[t] = {"original": len(kept), "effective": (n or {}).get(t, len(kept))}
    data = {"results": results, "configs": {t: {"task": t} for t in tasks}, "n-samples": n_samples,
            "config": {"model": "audio_lalm", "model_args": model_args}}
    path = folder / f"results_{date}.json"
    path.write_text(json.dumps(data))
    return path


def _rows(ids: list[str], acc: list[float], **extra: list[Any]) -> list[dict[str, Any]]:
    return [{"doc_id": i, "doc": {"doc_id": d, "question": "q"}, "filter": "none",
             "metrics": ["acc", *extra], "acc": a, **{k: v[i] for k, v in extra.items()}}
            for i, (d, a) in enumerate(zip(ids, acc))]


def test_per_doc_values_and_run_identity(tmp_path: Path) -> None:
    model_dir = tmp_path / "out" / "org__tiny"
    gender = _rows(["g0.wav", "g1.wav", "g2.wav", "g3.wav"], [1.0, 0.0, 1.0, 1.0],
                   acc_first_token=[1.0, 0.0, 0.0, 1.0], pred=["a", "b", "a", "a"])
    gender.reverse()  # lm-eval writes in any order; the reader sorts by lm-eval's integer index
    _write(model_dir, D1, "pretrained=org/tiny,revision=v2,dtype=float32,batch_size=4,share_prefix=False,"
           "max_gen_toks=8,steer=layer_guided,alpha=2,layers=[1,3]",
           {"sakura_gender": gender, "sakura_animal": _rows(["a0.wav", "a1.wav"], [0.0, 1.0])})
    run = read_run(tmp_path / "out")
    assert run.source == model_dir and run.results_files == [model_dir / f"results_{D1}.json"]
    assert run.model == "org/tiny@v2" and run.lm_eval_model == "audio_lalm"
    assert run.config == {"steer": "layer_guided", "alpha": "2", "layers": "[1,3]"}  # load/run args are not config
    assert run.steered and run.label == "org/tiny@v2 [steer=layer_guided,alpha=2,layers=[1,3]]"
    assert run.key == ("org/tiny@v2", (("alpha", "2"), ("layers", "[1,3]"), ("steer", "layer_guided")))
    t = run.tasks["sakura_gender"]
    assert t.name == "sakura_gender" and t.n == 4
    assert t.doc_ids == ["g0.wav", "g1.wav", "g2.wav", "g3.wav"]  # the document's own id, in index order
    assert t.by_doc() == {"g0.wav": 1.0, "g1.wav": 0.0, "g2.wav": 1.0, "g3.wav": 1.0}
    np.testing.assert_array_equal(t.values("acc_first_token"), [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(t.correct(), [True, False, True, True])
    assert t.accuracy() == 0.75 and run.accuracy("sakura_gender", "acc_first_token") == 0.5
    assert t.has("acc") and not t.has("pred")  # a non-numeric field is not a metric
    assert t.reported["acc,none"] == 0.75 and t.samples_file.name == f"samples_sakura_gender_{D1}.jsonl"
    assert run.tasks["sakura_animal"].by_doc() == {"a0.wav": 0.0, "a1.wav": 1.0}
    assert read_run(model_dir).tasks.keys() == run.tasks.keys()  # the model folder and the results file work too
    assert read_run(model_dir / f"results_{D1}.json").model == "org/tiny@v2"


def test_metric_errors_name_the_task_and_choices(tmp_path: Path) -> None:
    rows = _rows(["x", "y"], [1.0, 0.0], logprob=[-0.5, -1.5])
    _write(tmp_path / "m", D1, "steer=none", {"t": rows})
    t = read_run(tmp_path).tasks["t"]
    with pytest.raises(KeyError, match=re.escape("task 't' has no per-sample metric 'f1' (has: ['acc', 'logprob'])")):
        t.values("f1")
    with pytest.raises(ValueError, match="metric 'logprob' of task 't' is not 0/1"):
        t.correct("logprob")
    assert t.accuracy("logprob") == -1.0


def test_doc_id_fallback_duplicates_and_filters(tmp_path: Path) -> None:
    rows = [{"doc_id": 0, "doc": {"doc_id": "same.wav"}, "filter": "none", "metrics": ["acc"], "acc": 1.0},
            {"doc_id": 1, "doc": {"doc_id": "same.wav"}, "filter": "none", "metrics": ["acc"], "acc": 0.0},
            {"doc_id": 2, "doc": {"text": "no id"}, "filter": "none", "metrics": ["acc"], "acc": 1.0},
            {"doc_id": 0, "doc": {"doc_id": "same.wav"}, "filter": "strict", "metrics": ["acc"], "acc": 0.0}]
    _write(tmp_path / "m", D1, {"steer": "none", "batch_size": 2}, {"t": rows})
    run = read_run(tmp_path)
    assert run.model == EMBEDDED_MODEL and not run.steered and run.model_args == "steer=none,batch_size=2"
    assert run.tasks["t"].by_doc() == {"same.wav": 1.0, "same.wav#1": 0.0, "2": 1.0}  # "none" filter only


def test_newest_file_wins_per_task_and_configs_stay_apart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = out / "org__m"
    _write(folder, D1, "pretrained=org/m", {"a": _rows(["d0", "d1"], [0.0, 0.0]), "b": _rows(["e0"], [1.0])})
    _write(folder, D2, "pretrained=org/m", {"a": _rows(["d0", "d1"], [1.0, 0.0])})
    _write(folder, D2.replace("02T", "03T"), "pretrained=org/m,steer=head,alpha=1", {"a": _rows(["d0"], [1.0])})
    runs = read_runs(out)
    assert [(r.model, r.config_str) for r in runs] == [("org/m", ""), ("org/m", "steer=head,alpha=1")]
    plain = runs[0]
    assert plain.tasks["a"].by_doc() == {"d0": 1.0, "d1": 0.0}  # the re-run replaced the old numbers
    assert plain.tasks["b"].by_doc() == {"e0": 1.0}  # a task only the older file evaluated is kept
    assert plain.results_files == [folder / f"results_{D2}.json", folder / f"results_{D1}.json"]
    with pytest.raises(ResultsError, match=r"holds 2 runs; pass the results file or model folder") as e:
        read_run(out)
    assert "org/m [no intervention]" in str(e.value) and "org/m [steer=head,alpha=1]" in str(e.value)
    other = tmp_path / "other"
    _write(other / "org__n", D1, "pretrained=org/n", {"a": _rows(["d0"], [0.0])})
    assert [r.model for r in read_many([out, other])] == ["org/m", "org/m", "org/n"]


@pytest.mark.parametrize("kind", ["count", "accuracy"])
def test_samples_that_disagree_with_the_results_file_are_refused(tmp_path: Path, kind: str) -> None:
    rows = {"t": _rows(["x", "y"], [1.0, 0.0])}
    if kind == "count":  # the results file counts 5 samples, the samples file holds 2
        res = _write(tmp_path / "m", D1, "steer=none", rows, n={"t": 5})
    else:  # the results file reports accuracy 0.25, the samples give 0.5
        res = _write(tmp_path / "m", D1, "steer=none", rows, acc={"t": 0.25})
    msg = "holds 2 samples of t but the results file" if kind == "count" else "gives t accuracy 0.500000"
    with pytest.raises(ResultsError, match=re.escape(msg)) as e:
        read_run(tmp_path)
    assert str(res) in str(e.value) and f"samples_t_{D1}.jsonl" in str(e.value)


def test_missing_or_unreadable_output_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=re.escape(f"{tmp_path / 'nope'} does not exist")):
        read_runs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match=re.escape(f"under {tmp_path / 'empty'}") + ".*--log_samples"):
        read_runs(tmp_path / "empty")
    res = _write(tmp_path / "nos" / "m", D1, "steer=none", {"t": _rows(["x"], [1.0])})
    (res.parent / f"samples_t_{D1}.jsonl").unlink()
    with pytest.raises(ResultsError, match=re.escape(f"no per-sample file samples_t_{D1}.jsonl next to {res}")):
        read_runs(tmp_path / "nos")
    bad = tmp_path / "bad" / f"results_{D1}.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match=re.escape(f"cannot read lm-eval results file {bad}")):
        read_runs(bad)
    bad.write_text(json.dumps({"config": {}}))
    with pytest.raises(ResultsError, match=re.escape(f"{bad} is not an lm-eval results file")):
        read_runs(bad)


def test_pair_docs_aligns_on_doc_ids(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "m", D1, "steer=none", {"t": _rows(["d1", "d2", "d3", "d4", "d5"],
                                                                   [1.0, 0.0, 1.0, 1.0, 0.0])})
    _write(tmp_path / "b" / "m", D1, "steer=head", {"t": _rows(["d5", "d3", "d1", "x9"], [1.0, 0.0, 1.0, 1.0])})
    a, b = read_run(tmp_path / "a").tasks["t"], read_run(tmp_path / "b").tasks["t"]
    p = pair_docs(a, b)
    assert p.doc_ids == ["d1", "d3", "d5"]  # common docs in the order of the first run
    np.testing.assert_array_equal(p.a, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(p.b, [1.0, 0.0, 1.0])
    assert p.only_a == ["d2", "d4"] and p.only_b == ["x9"] and not p.same_docs
    assert p.describe_mismatch() == "2 docs only in baseline (d2, d4); 1 doc only in candidate (x9)"
    same = pair_docs(a, a)
    assert same.same_docs and same.describe_mismatch() == "same docs"


def test_model_args_parse_format_and_split() -> None:
    args = parse_model_args("pretrained=a/b, heads=[[1,2],[3,4]],prompt='x, y',parallelize,alpha=0.5")
    assert args == {"pretrained": "a/b", "heads": "[[1,2],[3,4]]", "prompt": "'x, y'", "parallelize": "True",
                    "alpha": "0.5"}
    assert parse_model_args(format_model_args(args)) == args
    assert parse_model_args(None) == {}
    assert parse_model_args({"layers": [1, 3], "alpha": 0.5, "x": None}) == {"layers": "[1, 3]", "alpha": "0.5",
                                                                               "x": "None"}
    model, cfg = split_model_args(parse_model_args(
        "pretrained=a/b,device=cpu,batch_size=8,share_prefix=True,max_gen_toks=4,first_token=True,torch_dtype=auto,"
        "steer=enrich,source_layer=2,gap=1,lam=0.5,seed=3"))
    assert model == "a/b" and cfg == {"steer": "enrich", "source_layer": "2", "gap": "1", "lam": "0.5", "seed": "3"}
    assert {"share_prefix", "max_gen_toks", "pretrained", "device_map"} <= NON_INTERVENTION_KEYS
    assert "steer" not in NON_INTERVENTION_KEYS and "alpha" not in NON_INTERVENTION_KEYS


@pytest.mark.parametrize("steer,unsteered", [(None, True), ("none", True), (" Off ", True), ("false", True),
                                             ("", True), ("0", True), ("head", False), ("enrich", False)])
def test_is_unsteered(steer: str | None, unsteered: bool) -> None:
    cfg = {} if steer is None else {"steer": steer}
    assert is_unsteered(cfg) is unsteered
