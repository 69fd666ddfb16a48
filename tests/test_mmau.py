"""MMAU test-mini tasks: official JSON + generated audio folder, local Hugging Face copy, metrics, splits.

Uses the official metadata (``$MMAU_JSON``, else ``<repo>/../shared/mmau/mmau-test-mini.json``); audio is generated.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from audio_tasks.data import mmau
from audio_tasks.tasks import TASKS_DIR
from audio_tasks.tasks import utils as task_utils

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
MMAU_JSON = Path(os.environ.get("MMAU_JSON") or REPO.parent / "shared" / "mmau" / "mmau-test-mini.json")
needs_json = pytest.mark.skipif(not MMAU_JSON.is_file(), reason=f"MMAU JSON not found at {MMAU_JSON} (set MMAU_JSON)")

FIRST_ID = "3fe64f3d-282c-4bc8-a753-68f8f6c35652"  # sound, 4 choices, answer "Man"
FIRST_PROMPT = ("Based on the given audio, identify the source of the speaking voice.\n"
                "(A) Man\n(B) Woman\n(C) Child\n(D) Robot")


def records():
    return json.loads(MMAU_JSON.read_text(encoding="utf-8"))


def pick_ids(recs):
    """A small subset covering 2/5/8 choices, a list-valued category and the three tasks."""
    ids = [FIRST_ID]
    for cond in (lambda r: len(r["choices"]) == 2, lambda r: len(r["choices"]) == 5,
                 lambda r: len(r["choices"]) == 8, lambda r: isinstance(r["category"], list),
                 lambda r: r["task"] == "music", lambda r: r["task"] == "speech"):
        ids.append(next(r["id"] for r in recs if cond(r) and r["id"] not in ids))
    return ids


def sine(freq=440.0, sr=16000, seconds=0.1, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32")
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_audio_dir(folder: Path, ids):
    folder.mkdir(parents=True, exist_ok=True)
    for k, qid in enumerate(ids):
        sf.write(str(folder / f"{qid}.wav"), sine(200 + 50 * k), 16000)
    return folder


def render(task, doc):
    ctx = task.fewshot_context(doc, 0, gen_prefix=task.doc_to_prefix(doc))
    reqs = task.construct_requests(doc, ctx, metadata=(task.config.task, 0, 1))
    return ctx, [r.arguments[1] for r in reqs], task.doc_to_target(doc), reqs[0].arguments[2]["audio"]


def task_manager(**metadata):
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)


@needs_json
def test_json_tasks_render(tmp_path):
    from lm_eval.tasks import get_task_dict
    recs = records()
    ids = pick_ids(recs)
    audio_dir = write_audio_dir(tmp_path / "audio", ids)
    tm = task_manager(mmau_json=str(MMAU_JSON), mmau_audio_dir=str(audio_dir), mmau_limit_ids=ids, split="all")
    assert {"mmau_sound", "mmau_music", "mmau_speech"} <= set(tm.all_tasks) and "mmau_test_mini" in tm.all_groups
    (group, leaves), = get_task_dict(["mmau_test_mini"], tm).items()
    assert group.group_name == "mmau_test_mini" and list(leaves) == ["mmau_sound", "mmau_music", "mmau_speech"]
    by_id = {r["id"]: r for r in recs}
    seen = set()
    for name, task in leaves.items():
        for doc in task.test_docs():
            rec = by_id[doc["doc_id"]]
            seen.add(doc["doc_id"])
            assert name == f"mmau_{rec['task']}"
            ctx, conts, target, audio = render(task, doc)
            letters = list("ABCDEFGH"[:len(rec["choices"])])
            assert conts == letters == doc["choices"]
            assert rec["choices"].index(rec["answer"]) == doc["gold"] and target == doc["choices"][doc["gold"]]
            assert doc["label"] == rec["answer"]
            listing = "\n".join(f"({a}) {c}" for a, c in zip(letters, rec["choices"]))
            assert doc["user_prompt"] == rec["question"] + "\n" + listing
            assert doc["assistant_prefix"] == "The answer is ("
            assert ctx.endswith("The answer is (")
            assert audio == [str((audio_dir / f"{rec['id']}.wav").resolve())]
            assert doc["difficulty"] == rec["difficulty"] and doc["sub_category"] == rec["sub-category"]
            cat = rec["category"]
            assert doc["category"] == (cat[0] if isinstance(cat, list) else cat)
            if doc["doc_id"] == FIRST_ID:
                assert doc["user_prompt"] == FIRST_PROMPT and conts == ["A", "B", "C", "D"] and target == "A"
    assert seen == set(ids)


def reduced_json(tmp_path, recs):
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    return path


def test_answer_prefix_and_errors(tmp_path):
    recs = [
        {"id": "q1", "audio_id": "./test-mini-audios/q1.wav", "question": "Who?", "choices": ["Man", "Woman"],
         "answer": "(B) Woman", "task": "speech", "difficulty": "easy", "category": ["Perception"],
         "sub-category": "Speaker", "dataset": "x"},
        {"id": "q2", "audio_id": "./test-mini-audios/q2.wav", "question": "What?",
         "choices": ["(A) Dog", "(B) Cat", "(C) Cow"], "answer": "Cow", "task": "sound", "difficulty": "hard",
         "category": "Reasoning", "sub-category": "Source", "dataset": "y"},
    ]
    json_path = reduced_json(tmp_path, recs)
    write_audio_dir(tmp_path / "test-mini-audios", ["q1", "q2"])  # default audio dir: next to the JSON
    docs = sorted(mmau.load_mmau(mmau_json=json_path, split="all")["test"], key=lambda d: d["doc_id"])
    assert [d["gold"] for d in docs] == [1, 2] and [d["label"] for d in docs] == ["Woman", "Cow"]
    assert docs[1]["user_prompt"] == "What?\n(A) Dog\n(B) Cat\n(C) Cow"
    assert [d["category"] for d in docs] == ["Perception", "Reasoning"]
    assert mmau.load_mmau("sound", mmau_json=json_path, split="all")["test"]["doc_id"] == ["q2"]

    (tmp_path / "test-mini-audios" / "q2.wav").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str((tmp_path / "test-mini-audios" / "q2.wav").resolve()))):
        mmau.load_mmau(mmau_json=json_path, split="all")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        mmau.load_mmau(mmau_json=json_path, mmau_audio_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        mmau.load_mmau(mmau_json=tmp_path / "missing.json", mmau_audio_dir=tmp_path)

    bad = [dict(recs[0], answer="Robot")]
    with pytest.raises(ValueError, match=r"MMAU item q1: answer 'Robot' is not among the choices"):
        mmau.load_mmau(mmau_json=reduced_json(tmp_path, bad), split="all")
    with pytest.raises(ValueError, match=r"item 0 \(id 'q1'\) lacks fields \['task'\]"):
        mmau.load_mmau(mmau_json=reduced_json(tmp_path, [{k: v for k, v in recs[0].items() if k != "task"}]))


@needs_json
def test_split_stratified_by_task(tmp_path):
    recs = records()
    labels = [r["task"] for r in recs]
    calib, evaluation = mmau.select_split(labels, "calibration"), mmau.select_split(labels, "evaluation")
    assert not set(calib) & set(evaluation) and sorted(calib + evaluation) == list(range(1000))
    # 200 slots over music 334 / sound 333 / speech 333: floors 66 each, the two left go to the largest
    # remainders (music .8, then sound before speech on the .6 tie)
    assert Counter(labels[i] for i in calib) == {"music": 67, "sound": 67, "speech": 66}
    # the loader draws the split on all items, then applies the task and id filters
    ids = [recs[i]["id"] for i in calib[:3] + evaluation[:3]]
    audio_dir = write_audio_dir(tmp_path / "audio", ids)
    for split, part in (("calibration", calib), ("evaluation", evaluation)):
        got = mmau.load_mmau(mmau_json=MMAU_JSON, mmau_audio_dir=audio_dir, mmau_limit_ids=",".join(ids),
                             split=split)["test"]["doc_id"]
        assert sorted(got) == sorted(recs[i]["id"] for i in part[:3])


def hf_copy(tmp_path, n_channels=2):
    """A local copy with the upstream column names, saved with save_to_disk."""
    sr_list = [16000, 44100]
    contexts, attrs = [], []
    for k, (qid, task, diff) in enumerate([("h1", "sound", "easy"), ("h2", "music", "hard")]):
        buf = io.BytesIO()
        sf.write(buf, sine(300 + 100 * k, sr_list[k], channels=n_channels), sr_list[k], format="WAV")
        contexts.append({"bytes": buf.getvalue(), "path": f"{qid}.wav"})
        attrs.append(json.dumps({"id": qid, "task": task, "difficulty": diff, "sub-category": "Sub",
                                 "category": "Reasoning", "dataset": "demo"}))
    ds = datasets.Dataset.from_dict({
        "context": contexts,
        "instruction": ["Which source?", "Which instrument?"],
        "choices": [["Dog", "Cat", "Car", "Bird"], ["Piano", "Guitar"]],
        "answer": ["Car", "Guitar"],
        "other_attributes": attrs,
    }).cast_column("context", datasets.Audio())
    path = tmp_path / "hf_copy"
    ds.save_to_disk(str(path))
    return path


def test_hf_copy(tmp_path, monkeypatch):
    from lm_eval.tasks import get_task_dict
    monkeypatch.setenv("AUDIO_LALM_CACHE", str(tmp_path / "cache"))
    path = hf_copy(tmp_path)
    tm = task_manager(mmau_hf_path=str(path), split="all")
    task = get_task_dict(["mmau_sound"], tm)["mmau_sound"]
    docs = task.test_docs()
    assert docs["doc_id"] == ["h1"]
    doc = docs[0]
    ctx, conts, target, audio = render(task, doc)
    assert doc["user_prompt"] == "Which source?\n(A) Dog\n(B) Cat\n(C) Car\n(D) Bird"
    assert conts == ["A", "B", "C", "D"] and target == "C" and doc["gold"] == 2 and doc["label"] == "Car"
    assert doc["difficulty"] == "easy" and doc["sub_category"] == "Sub" and doc["category"] == "Reasoning"
    assert audio == [doc["audio"]] and doc["audio"].startswith(str(tmp_path / "cache"))
    data, sr = sf.read(doc["audio"], dtype="float32")
    assert sr == 16000 and data.shape == (1600, 2)  # stereo kept; the model decodes/resamples
    assert np.allclose(data[:, 0], sine(300, 16000), atol=1e-4)
    music = mmau.load_mmau("music", mmau_hf_path=path, split="all")["test"][0]
    assert music["gold"] == 1 and sf.info(music["audio"]).samplerate == 44100


def test_hf_copy_missing_columns(tmp_path):
    datasets.Dataset.from_dict({"instruction": ["q"], "answer": ["a"]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"missing columns \['context', 'choices', 'other_attributes'\]"):
        mmau.load_mmau(mmau_hf_path=tmp_path / "bad")


def test_mp3_payload_cached_as_wav(tmp_path, monkeypatch):
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without MP3 support")
    from audio_tasks.data.audio_cache import cache_audio
    monkeypatch.setenv("AUDIO_LALM_CACHE", str(tmp_path))
    buf = io.BytesIO()
    sf.write(buf, sine(440, 16000, 0.5), 16000, format="MP3")
    out = cache_audio({"bytes": buf.getvalue(), "path": "clip.wav"}, "mmau/test-mini", "clip")
    assert out == str((tmp_path / "mmau" / "test-mini" / "clip.wav").resolve())
    assert sf.info(out).format == "WAV" and sf.info(out).samplerate == 16000


class LogLik(float):
    def __new__(cls, value, first):
        obj = super().__new__(cls, value)
        obj.first_token_logprob = first
        return obj


def test_process_results_mmau_by_hand():
    doc = {"gold": 2, "difficulty": "hard"}
    results = [(LogLik(-3.0, -0.2), False), (LogLik(-2.5, -2.0), False), (LogLik(-1.0, -1.5), False),
               (LogLik(-4.0, -3.0), False)]
    # summed: argmax = 2 (gold) -> acc 1; first token: argmax = 0 -> 0
    assert task_utils.process_results_mmau(doc, results) == {
        "acc": 1.0, "acc_first_token": 0.0, "acc_difficulty_easy": None, "acc_difficulty_medium": None,
        "acc_difficulty_hard": 1.0}
    doc = {"gold": 0, "difficulty": "easy"}
    assert task_utils.process_results_mmau(doc, [(-2.0, False), (-1.0, False)]) == {
        "acc": 0.0, "acc_first_token": 0.0, "acc_difficulty_easy": 0.0, "acc_difficulty_medium": None,
        "acc_difficulty_hard": None}
