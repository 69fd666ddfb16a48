"""End-to-end through the real `lm_eval` command: registration, SAKURA tasks, log samples, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import read_samples

ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def _run(args, cwd=None, timeout=400):
    p = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


def test_lm_eval_cli_runs_sakura_group_on_real_clips(tiny_qwen2_audio_dir, sakura_sample_root, tmp_path):
    out = _run([sys.executable, "-m", "lm_eval", "--model", "audio_lalm", "--model_args",
                f"pretrained={tiny_qwen2_audio_dir},batch_size=4", "--tasks", "sakura", "--device", "cpu",
                "--limit", "6", "--metadata", json.dumps({"data_root": str(sakura_sample_root)}),
                "--output_path", str(tmp_path / "o"), "--log_samples"])
    for t in ("sakura_gender", "sakura_language", "sakura_emotion", "sakura_animal"):
        assert t in out
    assert "acc_first_token" in out and "balanced_acc" in out and "acc_label_female" in out
    s = read_samples(tmp_path / "o", "sakura_gender")
    assert len(s) == 6
    args = s[0]["arguments"]
    # the exact rendered prompt is visible in the log
    rendered = (args["gen_args_0"]["arg_2"]["rendered_prompt"] if isinstance(args, dict)
                else args[0][2]["rendered_prompt"])
    assert rendered.endswith("<|im_start|>assistant\nThe speaker's gender is")


def test_lm_eval_cli_other_formats(tiny_qwen2_audio_dir, sakura_sample_root):
    tasks = "sakura_p1,sakura_p2,sakura_gender_single,sakura_animal_multi"
    out = _run([sys.executable, "-m", "lm_eval", "--model", "audio_lalm", "--model_args",
                f"pretrained={tiny_qwen2_audio_dir}", "--tasks", tasks, "--device", "cpu", "--limit", "3",
                "--metadata", json.dumps({"data_root": str(sakura_sample_root)})])
    assert "acc_first_token" in out
    for t in ("sakura_gender_p1", "sakura_emotion_p2", "sakura_gender_single", "sakura_animal_multi"):
        assert t in out


def test_two_process_gloo_run_merges_to_single_process_result(tiny_qwen2_audio_dir, sakura_sample_root, tmp_path):
    common = ["--model", "audio_lalm", "--model_args", f"pretrained={tiny_qwen2_audio_dir}", "--tasks",
              "sakura_gender", "--device", "cpu", "--limit", "8", "--metadata",
              json.dumps({"data_root": str(sakura_sample_root)}), "--log_samples"]
    _run([sys.executable, "-m", "lm_eval", *common, "--output_path", str(tmp_path / "one")])
    env_ok = dict(ENV, ACCELERATE_USE_CPU="true")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lm_eval",
                        *common, "--output_path", str(tmp_path / "two")], capture_output=True, text=True,
                       env=env_ok, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    one = {d["doc_id"]: d for d in read_samples(tmp_path / "one", "sakura_gender")}
    two = {d["doc_id"]: d for d in read_samples(tmp_path / "two", "sakura_gender")}
    assert one.keys() == two.keys() and len(one) == 8
    for k in one:
        a = [float(r[0][0]) for r in one[k]["resps"]]
        b = [float(r[0][0]) for r in two[k]["resps"]]
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
        assert one[k]["acc"] == two[k]["acc"]


def test_calibrate_command_then_steered_lm_eval(tiny_qwen2_audio_dir, sakura_sample_root, tmp_path):
    from analysis import runner

    cal = tmp_path / "cal"
    md = json.dumps({"data_root": str(sakura_sample_root)})
    assert runner.main(["calibrate", "--model_args", f"pretrained={tiny_qwen2_audio_dir},K=4", "--tasks",
                        "sakura_gender", "--metadata", md, "--kinds", "layer_guided,head", "--out", str(cal)]) == 0
    art = json.loads((cal / "calibration.json").read_text())
    assert art["meta"]["split"] == "calibration" and art["heads"]["K"] == 4
    # calibration clips never appear in the evaluation split (the default set is all clips: ask for it)
    md_eval = json.dumps({"data_root": str(sakura_sample_root), "split": "evaluation"})
    out = _run([sys.executable, "-m", "lm_eval", "--model", "audio_lalm", "--model_args",
                f"pretrained={tiny_qwen2_audio_dir},steer=layer_guided,calibration={cal}", "--tasks", "sakura_gender",
                "--device", "cpu", "--metadata", md_eval, "--output_path", str(tmp_path / "o"), "--log_samples"])
    assert "sakura_gender" in out
    evaluated = {str(s["doc"]["doc_id"]) for s in read_samples(tmp_path / "o", "sakura_gender")}
    assert evaluated and not evaluated & set(art["meta"]["clip_ids"])
    assert len(evaluated) + len(art["meta"]["clip_ids"]) == 36


def test_headline_command_runs_as_written_on_a_cpu_machine(tmp_path):
    """`lm_eval --model audio_lalm --tasks demo_gender --model_args steer=layer_guided`: embedded reference
    model, no --device (lm-eval passes cuda by default), automatic calibration on the calibration split."""
    env = dict(ENV, AUDIO_LALM_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "audio_lalm", "--tasks", "demo_gender",
                        "--model_args", "steer=layer_guided", "--limit", "8"], capture_output=True, text=True,
                       env=env, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert "calibrating on the calibration split of demo_gender" in out and "acc_first_token" in out
    assert list((tmp_path / "cache" / "calibration").glob("*/calibration.json"))
