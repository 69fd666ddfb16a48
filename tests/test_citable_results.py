"""Results a paper can cite (issue #12): full standard sets by default, label-balanced --limit, MMAU's text-match
scoring, the applied calibration in the results JSON, paired comparisons on common docs, never a NaN accuracy."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
MMAU_JSON = Path(os.environ.get("MMAU_JSON") or REPO.parent / "shared" / "mmau" / "mmau-test-mini.json")
needs_json = pytest.mark.skipif(not MMAU_JSON.is_file(), reason=f"MMAU JSON not found at {MMAU_JSON}")
DUP_CHOICES = ["1.63 seconds", "2.74 seconds", "1.53 seconds", "1.63 seconds"]  # the example


def csv_labels(root: Path, folder: str) -> list[tuple[str, str]]:
    with open(root / "data" / folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        return [(r["file"].strip(), r["attribute_label"].strip()) for r in csv.DictReader(fh)]


def save_run(results: dict, out: Path) -> Path:
    """Write a simple_evaluate result like the lm_eval CLI does (results JSON + samples files)."""
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out))
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for name in results["configs"]:
        tracker.save_results_samples(task_name=name, samples=samples[name])
    return out


def evaluate(lm, tasks, metadata, *, limit=None, model_args=""):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import simple_parse_args_string

    from audio_tasks.tasks import TASKS_DIR

    # fast index; the model arguments join the task metadata as in lm-eval's simple_evaluate (model_args | metadata)
    md = {**simple_parse_args_string(model_args), **metadata}
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=md)
    return simple_evaluate(model=lm, model_args=model_args, tasks=list(tasks), limit=limit, log_samples=True,
                           task_manager=tm, bootstrap_iters=0)


# ---- defaults and ordering ------------------------------------------------------------------------------------


def sorted_checkout(src: Path, dst: Path, folders=("Gender", "Animal")) -> Path:
    """The sample with its metadata sorted by label, as in the full SAKURA release (audio linked)."""
    for folder in folders:
        with open(src / "data" / folder / "metadata.csv", newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames, sorted(reader, key=lambda r: r["attribute_label"])
        (dst / "data" / folder).mkdir(parents=True)
        os.symlink(src / "data" / folder / "audio", dst / "data" / folder / "audio")
        with open(dst / "data" / folder / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    return dst


@pytest.mark.parametrize("layout", ["shared sample", "sorted by label"])
def test_full_sets_by_default_and_limit_covers_every_label(sakura_sample_root, tmp_path, layout):
    from audio_tasks.items import load_tasks, task_requests

    root = sakura_sample_root if layout == "shared sample" else sorted_checkout(sakura_sample_root, tmp_path / "s")
    md = {"data_root": str(root)}
    tasks = load_tasks(["sakura_gender", "sakura_animal"], md)
    for name, folder, limit, n_labels in (("sakura_gender", "Gender", 4, 2), ("sakura_animal", "Animal", 9, 9)):
        rows = csv_labels(root, folder)
        if layout == "sorted by label":  # the first `limit` csv rows miss labels (what --limit used to take)
            assert len({lab for _, lab in rows[:limit]}) < n_labels
        task = tasks[name]
        assert sorted(d["doc_id"] for d in task.eval_docs) == sorted(f for f, _ in rows)  # all clips: 36
        # lm-eval's own --limit path: the first N docs cover every label, evenly
        docs = [inst.doc for inst in task_requests(task, limit=limit)]
        counts = Counter(d["label"] for d in docs)
        assert len({d["doc_id"] for d in docs}) == limit and len(counts) == n_labels
        assert max(counts.values()) - min(counts.values()) == 0
        # labels agree with the csv, and membership in the held-out split is on every doc
        by_file = dict(rows)
        assert all(d["label"].casefold() == by_file[d["doc_id"]].casefold() for d in docs)
        assert {d["split"] for d in task.eval_docs} == {"calibration", "evaluation"}
    # deterministic
    again = load_tasks(["sakura_animal"], md)["sakura_animal"]
    assert [d["doc_id"] for d in again.eval_docs] == [d["doc_id"] for d in tasks["sakura_animal"].eval_docs]
    # with automatic calibration pending (a steer= model argument, no calibration=) the default is the
    # evaluation split (7 of 36 clips calibrate)
    ev = load_tasks(["sakura_gender"], {**md, "steer": "layer_guided"})["sakura_gender"]
    assert len(ev.eval_docs) == 29 and {d["split"] for d in ev.eval_docs} == {"evaluation"}


@needs_json
def test_mmau_group_reports_original_counts_and_breakdown(tiny_lm, tmp_path, capsys):
    from analysis import runner

    recs = json.loads(MMAU_JSON.read_text(encoding="utf-8"))
    audio = tmp_path / "audio"
    audio.mkdir()
    one = tmp_path / "one.wav"
    sf.write(str(one), (0.2 * np.sin(np.arange(3200) / 7.0)).astype("float32"), 16000)
    for r in recs:
        os.symlink(one, audio / Path(r["audio_id"]).name)
    md = {"mmau_json": str(MMAU_JSON), "mmau_audio_dir": str(audio)}
    res = evaluate(tiny_lm, ["mmau_test_mini"], md, limit=2)
    expected = Counter(r["task"] for r in recs)
    assert dict(expected) == {"sound": 333, "music": 334, "speech": 333}
    for dom, n in expected.items():
        assert res["n-samples"][f"mmau_{dom}"] == {"original": n, "effective": 2}
    assert sum(res["n-samples"][f"mmau_{d}"]["original"] for d in expected) == 1000
    # --limit 2 spans two sub-categories of each domain
    for dom in expected:
        assert len({s["doc"]["sub_category"] for s in res["samples"][f"mmau_{dom}"]}) == 2
    samples = {k: list(v) for k, v in res["samples"].items()}
    out = save_run(res, tmp_path / "run")
    assert runner.main(["mmau", str(out), "--json", str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    b = json.loads((tmp_path / "b.json").read_text())
    rows = [s for dom in expected for s in samples[f"mmau_{dom}"]]
    assert b["n"] == 6 and b["accuracy"] == pytest.approx(np.mean([s["acc"] for s in rows]))
    for facet, key in (("difficulty", "difficulty"), ("sub_category", "sub_category"), ("category", "category"),
                       ("domain", "task")):
        for value, got in b["by"][facet].items():
            vals = [s["acc"] for s in rows if str(s["doc"][key]) == value]
            assert got["n"] == len(vals) and got["accuracy"] == pytest.approx(np.mean(vals))
    assert "difficulty" in printed and "sub_category" in printed


def test_500_clip_track_scores_500_by_default(sakura_sample_root, tmp_path):
    """A checkout the size of the full release (500 rows; the sample's clips reused under new names)."""
    from audio_tasks.items import load_tasks

    src = sakura_sample_root / "data" / "Gender"
    with open(src / "metadata.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    dst = tmp_path / "full" / "data" / "Gender"
    (dst / "audio").mkdir(parents=True)
    big = []
    for n in range(500):
        r = dict(rows[n % len(rows)])
        name = f"g{n:03d}.wav"
        os.symlink(src / "audio" / r["file"], dst / "audio" / name)
        big.append({**r, "file": name})
    big.sort(key=lambda r: r["attribute_label"])  # like the release: sorted by label
    with open(dst / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(big)
    md = {"data_root": str(tmp_path / "full")}
    for name in ("sakura_gender", "sakura_gender_p1", "sakura_gender_single", "sakura_gender_multi"):
        assert len(load_tasks([name], md)[name].eval_docs) == 500
    auto = {**md, "steer": "head"}  # automatic calibration: 100 calibrate, the 400 others are evaluated
    assert len(load_tasks(["sakura_gender"], auto)["sakura_gender"].eval_docs) == 400
    assert len(load_tasks(["sakura_gender"], {**md, "split": "calibration"})["sakura_gender"].eval_docs) == 100


# ---- MMAU: an option whose text is the answer text counts wherever it stands ---------------------------------------


def test_repeated_answer_text_counts_at_either_position(tmp_path, tiny_lm):
    from analysis import heads, lens, tracing
    from audio_tasks.data import mmau
    from audio_tasks.items import task_items
    from audio_tasks.tasks import utils
    from interventions.calibrate import CalibrationData, info_scores
    from interventions.scoring import LogLik

    rec = {"id": "dup1", "audio_id": "./a/dup1.wav", "question": "How long?", "choices": DUP_CHOICES,
           "answer": "1.63 seconds", "task": "sound", "difficulty": "hard", "category": "Reasoning",
           "sub-category": "Temporal", "dataset": "x"}
    (tmp_path / "a").mkdir()
    sf.write(str(tmp_path / "a" / "dup1.wav"), (0.1 * np.sin(np.arange(4000) / 5.0)).astype("float32"), 16000)
    (tmp_path / "m.json").write_text(json.dumps([rec]))
    doc = mmau.load_mmau(mmau_json=tmp_path / "m.json", mmau_audio_dir=tmp_path / "a")["test"][0]
    assert doc["gold"] == 0 and doc["golds"] == [0, 3]  # the logged doc carries every correct index

    def results(best: int, best_first: int):
        return [(LogLik(-1.0 if k == best else -5.0, -1.0 if k == best_first else -5.0, 1), False) for k in range(4)]

    for best in (0, 3):  # either copy is right for acc, acc_first_token and the difficulty metric
        m = utils.process_results_mmau(doc, results(best, best))
        assert m["acc"] == m["acc_first_token"] == m["acc_difficulty_hard"] == 1.0
    m = utils.process_results_mmau(doc, results(1, 2))
    assert m["acc"] == m["acc_first_token"] == 0.0

    # the analyses' correctness labels: lens, heads (calibration data), tracing exclusions
    L = 3
    for best, ok in ((3, True), (0, True), (2, False)):
        logp = np.full((L + 1, 4), -5.0)
        logp[:, best] = -1.0
        tab = lens.lens_table([{"last": logp}], [[0, 3]])
        assert tab.accuracy == float(ok) and tab.info["last"] == [float(ok)] * (L + 1)
        lt = torch.tensor(logp, dtype=torch.float32)[None]
        data = CalibrationData(lens=lt, gold=torch.tensor([0]), attn_mass=torch.zeros(1, L, 2), resid_audio=None,
                               resid_silence=None, heads_audio=None, heads_silence=None,
                               silence_logp=lt[:, -1], choice_ids=[[1, 2, 3, 4]], golds=[[0, 3]])
        assert bool(data.correct[0]) is ok
        assert info_scores(data.lens, data.gold, golds=data.golds).tolist() == [float(ok)] * (L + 1)

        class It:
            continuations = [[1], [2], [3], [4]]
        assert heads.records_from_collect(data, [It()])[0]["correct"] is ok
        run = tracing.TraceRun(None, None, {}, 7, 0, [1, 2, 3, 4], 0.5, 0.1, logp[-1].tolist(), [-1.0, -2, -2, -2],
                               [0, 3])
        assert ("clean_wrong" in tracing.exclusions(run)) is (not ok)
    # what the analyses read from lm-eval's task: every correct index
    items = task_items(tiny_lm, ["mmau_sound"], metadata={"mmau_json": str(tmp_path / "m.json"),
                                                          "mmau_audio_dir": str(tmp_path / "a")})
    assert [it.meta["golds"] for it in items] == [[0, 3]]


# ---- automatic calibration: evaluation split only, on the record, paired comparison ------------------------------


def test_auto_calibrated_run_records_what_it_applied_and_pairs_with_full_run(
        tiny_qwen2_audio_dir, tiny_lm, sakura_sample_root, tmp_path, monkeypatch, capsys):
    from analysis import runner
    from audio_tasks.data.splits import stratified_split
    from audio_tasks.model import AudioLALM

    monkeypatch.setenv("AUDIO_LALM_CACHE", str(tmp_path / "cache"))
    md = {"data_root": str(sakura_sample_root)}
    base = evaluate(tiny_lm, ["sakura_gender"], md, model_args=f"pretrained={tiny_qwen2_audio_dir}")
    assert base["n-samples"]["sakura_gender"]["original"] == 36
    assert base["config"]["audio_lalm"]["interventions"]["sakura_gender"]["evaluation"]["split"] == "all"

    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=4, steer="layer_guided", K=2)
    args = f"pretrained={tiny_qwen2_audio_dir},steer=layer_guided,K=2"
    res = evaluate(lm, ["sakura_gender"], md, model_args=args, limit=12)
    rec = res["config"]["audio_lalm"]["interventions"]["sakura_gender"]
    rows = csv_labels(sakura_sample_root, "Gender")
    cal_idx, ev_idx = stratified_split([lab for _, lab in rows], 0, 0.2)
    cal_ids, ev_ids = {rows[i][0] for i in cal_idx}, {rows[i][0] for i in ev_idx}
    scored = {s["doc"]["doc_id"] for s in res["samples"]["sakura_gender"]}
    assert len(scored) == 12 and scored <= ev_ids and res["n-samples"]["sakura_gender"]["original"] == 29
    assert rec["evaluation"] == {"split": "evaluation", "n_docs": 12, "docs_by_split": {"evaluation": 12}}
    # the record equals the artifact the run wrote (independently read back)
    art = json.loads((Path(rec["artifact"]) / "calibration.json").read_text())
    assert Path(rec["artifact"]).parent == tmp_path / "cache" / "calibration" and rec["cache_key"]
    assert set(art["meta"]["clip_ids"]) == cal_ids
    assert rec["kind"] == "layer_guided" and rec["source"] == "automatic calibration"
    assert rec["strength"] == art["layer_guided"]["alpha"] and rec["strength_name"] == "alpha"
    assert rec["heads"] == art["heads"]["specialists"] and len(rec["heads"]) == rec["K"] == 2
    counts = Counter(l for l, _ in rec["heads"])
    assert rec["weights"] == {str(l): c / 2 for l, c in sorted(counts.items())}
    assert rec["layers"] == sorted(counts)
    assert rec["calibration"]["split"] == "calibration" and rec["calibration"]["n_docs"] == 7
    sweep = {float(k): v for k, v in art["layer_guided"]["sweep"].items()}
    assert [(s["strength"], s["accuracy"], s["n"]) for s in rec["calibration"]["sweep"]] == \
        [(a, sweep[a], 7) for a in sorted(sweep)]
    # compare pairs the steered run with the all-docs unsteered run on the 12 common docs and says so
    a, b = save_run(base, tmp_path / "base"), save_run(res, tmp_path / "steered")
    assert json.loads(next(b.rglob("results_*.json")).read_text())["config"]["audio_lalm"]["interventions"][
        "sakura_gender"]["strength"] == rec["strength"]
    assert runner.main(["compare", str(a), str(b), "--metric", "acc_first_token", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "metric acc_first_token" in out and "paired docs: 12" in out
    assert "compared on the 12 paired docs of 36 baseline / 12 candidate" in out and "24 docs only in baseline" in out


# ---- calibration artifacts: K=, strength 0 warning, validation ---------------------------------------------------


def write_artifact(folder: Path, model_dir: Path, L: int, H: int, fingerprint: dict, **sections) -> Path:
    from interventions.calibrate import ARTIFACT_VERSION

    ranking = [[l, h] for l in range(L, 0, -1) for h in range(H)][:5]
    doc = {"version": ARTIFACT_VERSION, "num_layers": L, "num_heads": H, "n_docs": 4,
           "meta": {"model_id": str(model_dir), "split": "calibration", "tasks": ["sakura_gender"],
                    "fingerprint": fingerprint,
                    "clip_ids": ["c1", "c2", "c3", "c4"]},
           "heads": {"K": 4, "specialists": ranking[:4], "ranking": ranking,
                     "layer_weights": {str(L): 0.5, str(L - 1): 0.5}},
           "layer_guided": {"alpha": 0.0, "sweep": {"0.0": 0.75, "1.0": 0.5}},
           "head": {"alpha": 1.0, "sweep": {"0.0": 0.5, "1.0": 0.75}}}
    for k, v in sections.items():
        sec, key = k.split("__")
        doc[sec][key] = v
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "calibration.json").write_text(json.dumps(doc))
    return folder


def test_K_takes_top_of_artifact_ranking_and_strength_zero_warns(tiny_qwen2_audio_dir, tiny_lm, sakura_sample_root,
                                                                  tmp_path):
    from audio_tasks.model import AudioLALM

    L, H = tiny_lm.spec.num_layers(tiny_lm.model), tiny_lm.spec.num_heads(tiny_lm.model)
    cal = write_artifact(tmp_path / "cal", tiny_qwen2_audio_dir, L, H, tiny_lm.identity)
    ranking = json.loads((cal / "calibration.json").read_text())["heads"]["ranking"]
    mk = dict(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=4, calibration=str(cal))
    head2 = AudioLALM(steer="head", K=2, **mk)
    assert [list(h) for h in head2.intervention_for("x").heads] == ranking[:2]
    lg = AudioLALM(steer="layer_guided", K=2, **mk).intervention_for("x")
    l0 = ranking[0][0]
    assert [list(h) for h in lg.heads] == ranking[:2] and lg.weights == {l0: 1.0}  # both in layer L
    assert [list(h) for h in AudioLALM(steer="head", **mk).intervention_for("x").heads] == ranking[:4]
    with pytest.raises(ValueError, match=r"K=6 .*ranks only 5 heads \('heads.ranking'\)"):
        AudioLALM(steer="head", K=6, **mk)

    # strength 0 selected by calibration: on the record and a WARNING saying how to force a strength
    lm = AudioLALM(steer="layer_guided", **mk)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("lm_eval.audio_lalm")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        res = evaluate(lm, ["sakura_gender"], {"data_root": str(sakura_sample_root)}, limit=2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    warn = [r.getMessage() for r in seen if r.levelno == logging.WARNING and "selected alpha = 0" in r.getMessage()]
    assert len(warn) == 1 and "identity" in warn[0] and "alpha=" in warn[0] and "sakura_gender" in warn[0]
    info = [r.getMessage() for r in seen if r.levelno == logging.INFO and "applies" in r.getMessage()]
    assert len(info) == 1
    rec = res["config"]["audio_lalm"]["interventions"]["sakura_gender"]
    assert rec["strength"] == 0.0 and rec["strength_source"] == "calibration" and rec["artifact"] == str(cal)
    assert rec["heads"] == ranking[:4] and rec["source"] == "calibration artifact"
    assert [s["strength"] for s in rec["calibration"]["sweep"]] == [0.0, 1.0]


@pytest.mark.parametrize("key,value,msg", [
    ("layer_guided__alpha", float("nan"), r"key 'layer_guided.alpha' is nan; expected a finite number"),
    ("head__alpha", "big", r"key 'head.alpha' is 'big'; expected a finite number"),
    ("heads__specialists", [], r"key 'heads.specialists' is \[\]; expected a non-empty list"),
    ("heads__ranking", [[99, 0]], r"key 'heads.ranking\[0\]' is head \[99, 0\], out of range"),
])
def test_invalid_artifact_refused_naming_file_and_key(tiny_qwen2_audio_dir, tiny_lm, tmp_path, key, value, msg):
    from audio_tasks.model import AudioLALM
    from interventions.calibrate import load_artifact

    L, H = tiny_lm.spec.num_layers(tiny_lm.model), tiny_lm.spec.num_heads(tiny_lm.model)
    cal = write_artifact(tmp_path / "bad", tiny_qwen2_audio_dir, L, H, tiny_lm.identity, **{key: value})
    js = str(cal / "calibration.json")
    with pytest.raises(ValueError, match=msg) as e:
        load_artifact(cal, num_layers=L, num_heads=H)
    assert js in str(e.value)
    with pytest.raises(ValueError, match=msg):
        AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", steer="layer_guided", calibration=str(cal))


# ---- never a NaN accuracy --------------------------------------------------------------------------------------


def test_nonfinite_score_is_an_error_in_the_metric_too():
    from audio_tasks.tasks import utils
    from interventions.scoring import LogLik

    doc = {"doc_id": "clip9.wav", "gold": 0, "label": "male", "label_set": ["male", "female"],
           "options": ["male", "female"]}
    with pytest.raises(utils.NonFiniteScoreError, match="clip9.wav"):
        utils.process_results(doc, [(LogLik(math.nan, math.nan, 1), False), (LogLik(-1.0, -1.0, 1), False)])


def test_lm_eval_exits_nonzero_on_nan_scores(tiny_qwen2_audio_dir, sakura_sample_root, tmp_path):
    """The issue's command; the tiny fp32 model saturates to finite (uniform) scores at alpha=1e38, so it runs
    in float16 where the edit overflows to inf -> NaN, as bf16/7B checkpoints do."""
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "audio_lalm", "--model_args",
                        f"pretrained={tiny_qwen2_audio_dir},steer=single_layer,alpha=1e38,layers=2,dtype=float16",
                        "--tasks", "sakura_gender", "--device", "cpu", "--limit", "1", "--metadata",
                        json.dumps({"data_root": str(sakura_sample_root)}), "--output_path", str(out)],
                       check=False, capture_output=True, text=True, timeout=500,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert p.returncode != 0
    err = p.stderr[-4000:]
    assert "non-finite score on task 'sakura_gender', doc '" in err and '"kind": "single_layer"' in err
    assert '"strength": 1e+38' in err and '"layers": [2]' in err
    assert not list(out.rglob("results_*.json"))  # nothing written
