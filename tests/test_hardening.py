"""Issue #13: bad inputs get a clear error before work starts; caches and resumes are exact."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from interventions.config import SteerConfig

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SAKURA_SAMPLE_ROOT") or REPO.parent / "shared" / "sakura-sample")


# ---- arguments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,msg", [
    ({"calibration": "/no/such/dir"}, "calibration given but steer=none"),
    ({"K": "3"}, "K given but steer=none"),
    ({"gap": "2"}, "gap given but steer=none"),
    ({"source_layer": "1"}, "source_layer given but steer=none"),
    ({"seed": "1"}, "seed given but steer=none"),
    ({"alphas": "0;1"}, "alphas given but steer=none"),
])
def test_intervention_only_arguments_with_steer_none_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SteerConfig.from_kwargs({"steer": "none", **kw})
    SteerConfig.from_kwargs({"steer": "none", **{k: v for k, v in kw.items() if k in ("K", "gap", "seed", "alphas")}},
                            calibrating=True)  # the calibrate command's own settings


def test_calibration_split_is_no_longer_an_argument(tiny_qwen2_audio_dir):
    from audio_tasks.model import AudioLALM

    with pytest.raises(ValueError, match=r"unknown model argument\(s\) \['calibration_split'\]"):
        AudioLALM(pretrained=str(tiny_qwen2_audio_dir), calibration_split="x")


@pytest.mark.parametrize("kw,msg", [
    ({"steer": "head", "K": "abc"}, "K must be an integer, got 'abc'"),
    ({"steer": "head", "seed": "abc"}, "seed must be an integer, got 'abc'"),
    ({"steer": "enrich", "gap": "x"}, "gap must be an integer"),
    ({"steer": "enrich", "source_layer": "1.5"}, "source_layer must be an integer"),
    ({"steer": "layer_guided", "alphas": ""}, "strength grid is empty"),
    ({"steer": "layer_guided", "alphas": "a;b"}, "alphas: expected numbers"),
])
def test_bad_values_name_the_argument(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SteerConfig.from_kwargs(kw)


@pytest.mark.parametrize("kw,msg", [({"batch_size": "abc"}, "batch_size must be an integer, got 'abc'"),
                                    ({"max_gen_toks": "x"}, "max_gen_toks must be an integer"),
                                    ({"batch_size": "0"}, "batch_size must be >= 1")])
def test_bad_model_ints_are_named_before_loading(kw, msg, monkeypatch):
    from audio_tasks import model as m

    monkeypatch.setattr(m, "load_model", lambda *a, **k: pytest.fail("the model loaded before the check"))
    with pytest.raises(ValueError, match=msg):
        m.AudioLALM(pretrained="/nonexistent", **kw)


def test_source_layer_on_a_shallow_model_names_the_gap():
    c = SteerConfig.from_kwargs({"steer": "enrich", "source_layer": "3", "alpha": "1"})
    with pytest.raises(ValueError, match=r"with gap 5 a model with 4 layers has no valid source layer.*gap in 0\.\.3"):
        c.validate_against(4, 4)


# ---- calibration artifacts: identity and gap ------------------------------------------------------------------


def _artifact(path, lm, **over):
    from interventions.calibrate import save_artifact

    meta = {"model_id": lm.pretrained, "fingerprint": dict(lm.identity)}
    meta.update(over)
    result = {"num_layers": 4, "num_heads": 4, "enrich": {"source_layer": 1, "gap": 2, "lam": 0.5},
              "heads": {"specialists": [[1, 0], [2, 1]]}, "layer_guided": {"alpha": 1.0}}
    save_artifact(path, meta, result, {"x": torch.zeros(1)})
    return path


def test_artifact_for_another_model_in_a_same_named_folder_is_refused(tiny_lm, tmp_path):
    from audio_tasks.model import AudioLALM

    other = tmp_path / "b" / "model"  # same folder name, same layer/head counts, other weights
    tiny_lm.model.save_pretrained(other)
    tiny_lm.processor.save_pretrained(other)
    from safetensors.torch import load_file, save_file

    f = next(other.glob("*.safetensors"))
    sd = load_file(f)
    name = sorted(sd)[len(sd) // 2]
    sd[name] = sd[name] + 0.01
    save_file(sd, f, metadata={"format": "pt"})
    lm_b = AudioLALM(pretrained=str(other), device="cpu")
    assert lm_b.identity["weights"] != tiny_lm.identity["weights"]
    assert {k: v for k, v in lm_b.identity.items() if k != "weights"} == \
           {k: v for k, v in tiny_lm.identity.items() if k != "weights"}
    art = _artifact(tmp_path / "a" / "cal", lm_b)
    with pytest.raises(ValueError, match=r"was made for model '.*/b/model'.*weights:"):
        AudioLALM(pretrained=str(tiny_lm.pretrained), steer="layer_guided", calibration=str(art), device="cpu")
    AudioLALM(pretrained=str(other), steer="layer_guided", calibration=str(art), device="cpu")  # its own model: fine


def test_enrich_with_artifact_uses_the_artifacts_gap_on_a_shallow_model(tiny_lm, tmp_path):
    from audio_tasks.model import AudioLALM

    art = _artifact(tmp_path / "cal", tiny_lm)
    lm = AudioLALM(pretrained=str(tiny_lm.pretrained), steer="enrich", calibration=str(art), device="cpu")
    iv = lm._interventions["*"]
    assert (iv.source_layer, iv.gap, iv.target_layer) == (1, 2, 3)


# ---- analysis commands: validation before work, pins only after --------------------------------------------


def _sakura_ok() -> bool:
    return (SAMPLE / "data" / "Gender" / "metadata.csv").exists()


needs_sample = pytest.mark.skipif(not _sakura_ok(), reason="SAKURA sample not available")


@needs_sample
def test_failed_run_does_not_pin_settings(tiny_qwen2_audio_dir, tmp_path):
    from analysis import runner

    def argv(root):
        return ["lens", "--model_args", f"pretrained={tiny_qwen2_audio_dir},dtype=float32", "--tasks", "sakura_gender",
                "--metadata", json.dumps({"data_root": str(root)}), "--limit", "2", "--out", str(tmp_path / "o"),
                "--no_progress", "--batch_size", "2"]

    with pytest.raises(FileNotFoundError, match="data_root"):
        runner.main(argv(tmp_path / "no-such-data"))  # fails after the model loaded, on its inputs
    assert not (tmp_path / "o" / "lens_run.json").exists()
    assert runner.main(argv(SAMPLE)) == 0  # the corrected command is not refused


@needs_sample
@pytest.mark.parametrize("extra,msg", [("gap=9", "gap=9 too large"), ("alphas=", "strength grid is empty")])
def test_calibrate_checks_arguments_before_any_forward(tiny_qwen2_audio_dir, tmp_path, monkeypatch, extra, msg):
    from analysis import runner
    from interventions.engine import Engine

    def boom(*a, **k):
        raise AssertionError("a forward pass ran before the arguments were checked")

    monkeypatch.setattr(Engine, "run", boom)
    monkeypatch.setattr(Engine, "audio_embeddings", boom)
    with pytest.raises((SystemExit, ValueError), match=msg):
        runner.main(["calibrate", "--model_args", f"pretrained={tiny_qwen2_audio_dir},{extra}", "--tasks",
                     "sakura_gender", "--metadata", json.dumps({"data_root": str(SAMPLE)}), "--limit", "2",
                     "--out", str(tmp_path / "c"), "--no_progress"])


# ---- data: confinement, header-only, hub errors, audio warnings ------------------------------------------------


def _track(tmp_path, rows: list[str]) -> Path:
    d = tmp_path / "data" / "Gender"
    (d / "audio").mkdir(parents=True)
    (d / "metadata.csv").write_text("file,attribute_label\n" + "".join(r + "\n" for r in rows))
    return tmp_path


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/hostname", "sub/../../x.wav"])
def test_sakura_rows_cannot_reference_files_outside_audio(tmp_path, name):
    from audio_tasks.data.sakura import read_local

    root = _track(tmp_path, [f"{name},male"])
    with pytest.raises(ValueError, match=r"metadata.csv, row 1: file .* is not a file name inside"):
        read_local("gender", root)


def test_mmau_audio_id_cannot_leave_the_audio_folder(tmp_path):
    from audio_tasks.data.mmau import read_json

    js = tmp_path / "m.json"
    js.write_text(json.dumps([{"id": "x", "audio_id": "..", "question": "q", "choices": ["a", "b"], "answer": "a",
                               "task": "sound"}]))
    with pytest.raises(ValueError, match="names no file inside"):
        read_json(js, tmp_path)


def test_header_only_metadata_names_the_file(tmp_path):
    from audio_tasks.data.sakura import read_local

    root = _track(tmp_path, [])
    with pytest.raises(ValueError, match=r"Gender/metadata.csv: no rows \(header only\)"):
        read_local("gender", root)


def test_no_data_and_no_hub_gives_one_clear_error(monkeypatch):
    import datasets

    from audio_tasks.data import mmau, sakura
    from audio_tasks.data.errors import DataUnavailable

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'x' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("SAKURA_DATA_ROOT", raising=False)
    with pytest.raises(DataUnavailable) as e:
        sakura.load_sakura("gender")
    msg = str(e.value)
    assert "SLLM-multi-hop/GenderQA" in msg and "data_root" in msg and "SAKURA_DATA_ROOT" in msg and "hub" in msg
    with pytest.raises(DataUnavailable) as e:
        mmau.load_mmau("sound")
    msg = str(e.value)
    assert "gamma-lab-umd/MMAU-test-mini" in msg and "mmau_json" in msg and "mmau_audio_dir" in msg \
        and "mmau_hf_path" in msg


def test_truncated_wav_warns_naming_the_file(tmp_path, caplog):
    import soundfile as sf

    from audio_tasks.audio import load_audio

    p = tmp_path / "clip.wav"
    sf.write(p, np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header still claims 16000 samples
    with caplog.at_level(logging.WARNING, logger="audio_tasks.audio"):
        wav = load_audio(str(p), 16000, where="task t, doc 3")
    assert 0 < len(wav) < 16000
    assert any(str(p) in r.getMessage() and "truncated" in r.getMessage() and "doc 3" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    ok = tmp_path / "ok.wav"
    sf.write(ok, np.zeros(800, dtype=np.float32), 16000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="audio_tasks.audio"):
        load_audio(str(ok), 16000)
    assert not caplog.records


def test_long_clip_warning_names_the_doc(caplog, monkeypatch):
    from audio_tasks import audio

    with caplog.at_level(logging.WARNING, logger="audio_tasks.audio"):  # no process-wide "warned" flag to reset
        audio.warn_if_truncated(16000 * 31, 16000, 30.0, "task sakura_gender, doc 7")
    assert any("doc 7" in r.getMessage() for r in caplog.records)


# ---- temp files -------------------------------------------------------------------------------------------


def test_stale_temp_files_are_swept_on_resume_and_live_ones_kept(tmp_path):
    from analysis.records import RecordStore

    stale, live = tmp_path / ".lens_summary.json.abc.tmp", tmp_path / "figures" / ".x.png.def.tmp"
    live.parent.mkdir()
    stale.write_text("partial")
    live.write_text("being written")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    RecordStore(tmp_path / "lens_records.jsonl")
    assert not stale.exists() and live.exists()


# ---- log hygiene -----------------------------------------------------------------------------------------------


def test_metadata_warning_shown_once(caplog):
    from audio_tasks._startup import quiet_repeated_warnings

    quiet_repeated_warnings()
    lg = logging.getLogger("lm_eval.api.task")
    with caplog.at_level(logging.WARNING, logger="lm_eval.api.task"):
        for t in ("a", "b", "c"):
            lg.warning(f"{t}: Custom kwargs can be passed to `--metadata` in console (as json string)")
        lg.warning("something else")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("Custom kwargs" in m for m in msgs) <= 1 and "something else" in msgs


def test_no_past_key_values_future_warning(tiny_lm):
    import warnings

    from interventions.scoring import MCItem, score_items

    wave = np.zeros(8000, dtype=np.float32)
    prompt = tiny_lm.engine.render_chat("q", assistant_prefix="A", n_audio=1)
    it = MCItem(tiny_lm.engine.tokenize(prompt, [wave]), [[5, 6], [7]], {"gold": 0})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        score_items(tiny_lm.engine, [it], None)
    assert not [x for x in w if "past_key_values" in str(x.message)]


def test_default_cli_device_fallback_is_info(tiny_qwen2_audio_dir, caplog, monkeypatch):
    from audio_tasks import model as m

    monkeypatch.setattr(m.torch if hasattr(m, "torch") else torch.cuda, "is_available", lambda: False, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["lm_eval"])
    with caplog.at_level(logging.INFO, logger="lm_eval.audio_lalm"):
        m.AudioLALM.create_from_arg_string(f"pretrained={tiny_qwen2_audio_dir}", {"device": "cuda:0"})
    rec = [r for r in caplog.records if "CUDA is not available" in r.getMessage()]
    assert rec and all(r.levelno == logging.INFO for r in rec)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lm_eval.audio_lalm"):
        m.AudioLALM.create_from_arg_string(f"pretrained={tiny_qwen2_audio_dir},device=cuda:0", {})
    rec = [r for r in caplog.records if "CUDA is not available" in r.getMessage()]
    assert rec and all(r.levelno == logging.WARNING for r in rec)


# ---- --use_cache ---------------------------------------------------------------------------------------------


def _reqs(paths, task="t"):
    from lm_eval.api.instance import Instance

    out = []
    for i, p in enumerate(paths):
        doc = {"user_prompt": "Which?", "assistant_prefix": "It is"}
        for c in (" male", " female"):
            out.append(Instance("loglikelihood", doc, ("ctx", c, {"audio": [str(p)]}), i, metadata=(task, i, 1)))
    return out


def test_use_cache_serves_an_identical_rerun_and_never_shares_across_clips_or_models(tiny_qwen2_audio_dir, tmp_path):
    import soundfile as sf
    from lm_eval.api.model import CachingLM

    from audio_tasks.model import AudioLALM

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"c{i}.wav"
        sf.write(p, (0.1 * rng.standard_normal(8000 + 2000 * i)).astype(np.float32), 16000)
        paths.append(p)
    db = str(tmp_path / "cache.db")
    lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu")
    calls = []
    orig = lm.loglikelihood
    lm.loglikelihood = lambda reqs, *a, **k: (calls.append(len(reqs)), orig(reqs, *a, **k))[1]
    first = CachingLM(lm, db).loglikelihood(_reqs(paths[:2]))
    again = CachingLM(lm, db).loglikelihood(_reqs(paths[:2]))  # identical rerun: all cached
    assert calls == [4]
    assert [float(a[0]) for a in first] == [float(b[0]) for b in again]
    assert [a[0].first_token_logprob for a in first] == [b[0].first_token_logprob for b in again]
    CachingLM(lm, db).loglikelihood(_reqs([paths[2], paths[0]]))  # same text, another clip: not served
    assert calls == [4, 2]
    other = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", dtype="bfloat16")
    with pytest.raises(ValueError, match="different model arguments"):
        CachingLM(other, db)  # other dtype: refused, never served each other's entries
    steered = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", steer="enrich", source_layer=1, gap=2,
                        alpha=0.5)
    with pytest.raises(ValueError, match="different model arguments"):
        CachingLM(steered, db)


# ---- results files ----------------------------------------------------------------------------------------------


def test_truncated_samples_file_is_refused_naming_it(tmp_path):
    from analysis.results_io import ResultsError, read_runs

    d = tmp_path / "run" / "m"
    d.mkdir(parents=True)
    rows = [{"doc_id": i, "doc": {"doc_id": f"c{i}"}, "filter": "none", "metrics": ["acc"], "acc": float(i % 3 == 0)}
            for i in range(12)]
    acc = float(np.mean([r["acc"] for r in rows]))
    res = {"results": {"t": {"acc,none": acc}}, "configs": {"t": {}},
           "n-samples": {"t": {"original": 12, "effective": 12}},
           "config": {"model_args": "pretrained=x"}}
    (d / "results_2026-01-01T00-00-00.json").write_text(json.dumps(res))
    sf = d / "samples_t_2026-01-01T00-00-00.jsonl"
    sf.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_runs(tmp_path / "run")[0].tasks["t"].n == 12
    sf.write_text("".join(json.dumps(r) + "\n" for r in rows[:9]))  # truncated
    with pytest.raises(ResultsError, match=r"samples_t_.*holds 9 samples of t but the results file .* counts 12"):
        read_runs(tmp_path / "run")
    rows[1]["acc"] = 1.0  # right count, other accuracy
    sf.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ResultsError, match="do not belong together"):
        read_runs(tmp_path / "run")


# ---- batch-composition independence -------------------------------------------------------------------------


@needs_sample
def test_a_task_scores_bit_identically_alone_and_beside_another(tiny_qwen2_audio_dir):
    from audio_tasks.items import load_tasks, task_requests
    from audio_tasks.model import AudioLALM

    md = {"data_root": str(SAMPLE), "split": "all"}
    tasks = load_tasks(["sakura_language", "sakura_gender"], md)
    lang, gender = task_requests(tasks["sakura_language"]), task_requests(tasks["sakura_gender"])
    clips = {Path(r.args[2]["audio"][0]).name for r in lang} & {Path(r.args[2]["audio"][0]).name for r in gender}
    assert clips  # the two tracks share clips, so "beside" could share their prefixes and batches

    def run(reqs):
        lm = AudioLALM(pretrained=str(tiny_qwen2_audio_dir), device="cpu", batch_size=4)
        return lm.loglikelihood(reqs)

    alone = run(lang)
    beside = run(gender[:20] + lang)[20:]
    assert [float(a[0]) for a in alone] == [float(b[0]) for b in beside]
    assert [a[0].first_token_logprob for a in alone] == [b[0].first_token_logprob for b in beside]


# ---- kill -9 and restart ------------------------------------------------------------------------------------


@needs_sample
def test_lens_sigkilled_mid_run_and_restarted_is_byte_identical(whole_runs, tiny_qwen2_audio_dir, tmp_path):
    """A real SIGKILL of a subprocess once 3 records are on disk (mid-batch: batches of 2, and the kill lands
    while later batches are computed), then a restart; outputs equal an uninterrupted run byte for byte."""
    import signal
    import subprocess
    import sys

    from analysis import runner

    def argv(out):
        return _cmd("lens", tiny_qwen2_audio_dir, out)

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "analysis", *argv(killed)], env=env, cwd=str(REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = killed / "lens_records.jsonl"
    try:
        while proc.poll() is None:
            if rec.exists() and rec.read_bytes().count(b"\n") >= 3:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "lens_summary.json").exists()
    assert runner.main(argv(killed)) == 0
    a, b = _tree(whole_runs / "lens"), _tree(killed)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


class _Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing catches it, nothing after it runs."""


def _kill_after(monkeypatch, n: int) -> None:
    from analysis.records import RecordStore

    real = RecordStore.add
    count = {"n": 0}

    def add(self, rec):
        real(self, rec)
        count["n"] += 1
        if count["n"] >= n:
            raise _Killed(f"killed after {n} records")

    monkeypatch.setattr(RecordStore, "add", add)


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _cmd(cmd, model, out):
    extra = {"trace": ["--rows", "32"], "heads": ["--batch_size", "2", "--K", "3", "--n_random", "2"],
             "lens": ["--batch_size", "2"], "calibrate": ["--batch_size", "2", "--random_controls", "2"]}[cmd]
    model_args = f"pretrained={model},dtype=float32" + (",K=3,gap=2,alphas=0;1;2" if cmd == "calibrate" else "")
    # Two prompt formats of the same clips with 3 items per task in batches of 2: a restart re-encodes a clip
    # beside another partner than the uninterrupted run did (the batch-composition bug of issue #13).
    tasks = "sakura_gender_p1,sakura_gender_p2" if cmd in ("lens", "heads") else "sakura_gender"
    return [cmd, "--model_args", model_args, "--tasks", tasks, "--metadata",
            json.dumps({"data_root": str(SAMPLE)}), "--limit", "3", "--out", str(out), "--no_progress", *extra]


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory, tiny_qwen2_audio_dir):
    from analysis import runner

    if not _sakura_ok():
        pytest.skip("SAKURA sample not available")
    root = tmp_path_factory.mktemp("whole")
    for cmd in ("lens", "trace", "heads", "calibrate"):
        assert runner.main(_cmd(cmd, tiny_qwen2_audio_dir, root / cmd)) == 0
    return root


@needs_sample
@pytest.mark.parametrize("cmd,points", [("lens", (1, 3)), ("trace", (1, 2)), ("heads", (3, 5))])
def test_killed_at_several_points_and_restarted_is_byte_identical(whole_runs, tiny_qwen2_audio_dir, tmp_path,
                                                                   monkeypatch, cmd, points):
    from analysis import runner

    out = tmp_path / cmd
    argv = _cmd(cmd, tiny_qwen2_audio_dir, out)
    for n in points:  # killed, restarted, killed again later, restarted to the end
        with monkeypatch.context() as m:
            _kill_after(m, n)
            with pytest.raises(_Killed):
                runner.main(argv)
    assert runner.main(argv) == 0
    a, b = _tree(whole_runs / cmd), _tree(out)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


@needs_sample
@pytest.mark.parametrize("where", ["interventions.calibrate.sweep_forward", "analysis.figures.sweep_figures"])
def test_calibrate_killed_and_rerun_is_byte_identical(whole_runs, tiny_qwen2_audio_dir, tmp_path, monkeypatch, where):
    """Killed during the strength sweep (nothing written yet) or after the artifact, during the figures."""
    import importlib

    from analysis import runner

    mod, name = where.rsplit(".", 1)

    def killed(*a, **k):
        raise _Killed(where)

    out = tmp_path / "cal"
    with monkeypatch.context() as m:
        m.setattr(importlib.import_module(mod), name, killed)
        with pytest.raises(_Killed):
            runner.main(_cmd("calibrate", tiny_qwen2_audio_dir, out))
    assert runner.main(_cmd("calibrate", tiny_qwen2_audio_dir, out)) == 0
    a, b = _tree(whole_runs / "calibrate"), _tree(out)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
