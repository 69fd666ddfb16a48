"""SAKURA tasks: prompts of AudioLens Table I, lettered single/multi-hop tasks, loaders, metrics.

Uses the real SAKURA sample (``$SAKURA_SAMPLE_ROOT``, else ``<repo>/../shared/sakura-sample``); offline.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from audio_tasks.data import sakura
from audio_tasks.tasks import TASKS_DIR
from audio_tasks.tasks import utils as task_utils

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SAKURA_SAMPLE_ROOT") or REPO.parent / "shared" / "sakura-sample")
needs_sample = pytest.mark.skipif(not (SAMPLE / "data").is_dir(),
                                  reason=f"SAKURA sample not found at {SAMPLE} (set SAKURA_SAMPLE_ROOT)")

FOLDER = {"gender": "Gender", "language": "Language", "emotion": "Emotion", "animal": "Animal"}

# AudioLens Table I, written out literally (straight apostrophes).
TABLE_I = {
    "gender": {
        "prefix": "The speaker's gender is",
        "p2": "What is the gender of the speaker in the speech?",
        "p3": "What is the gender of the speaker in the speech? Possible options: male, female.",
    },
    "language": {
        "prefix": "The speech's spoken language is",
        "p2": "What is the language spoken in the speech?",
        "p3": "What is the language spoken in the speech? Possible options: English, German, Spanish, "
              "French, Italian, Chinese, Japanese, Korean.",
    },
    "emotion": {
        "prefix": "The speaker's emotion is",
        "p2": "What is the emotion of the speaker in the speech?",
        "p3": "What is the emotion of the speaker in the speech? Possible options: angry, disgust, fear, happy, sad.",
    },
    "animal": {
        "prefix": "The sound file's animal is",
        "p2": "What animal makes the sound?",
        "p3": "What animal makes the sound? Possible options: dog, cat, pig, cow, frog, hen, rooster, sheep, crow.",
    },
}
LABELS = {
    "gender": ["male", "female"],
    "language": ["English", "German", "Spanish", "French", "Italian", "Chinese", "Japanese", "Korean"],
    "emotion": ["angry", "disgust", "fear", "happy", "sad"],
    "animal": ["dog", "cat", "pig", "cow", "frog", "hen", "rooster", "sheep", "crow"],
}


def csv_rows(track):
    with (SAMPLE / "data" / FOLDER[track] / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                       metadata={"data_root": str(SAMPLE), "split": "all"})


def load_tasks(tm, names):
    from lm_eval.tasks import get_task_dict
    return get_task_dict(names, tm)


def render(task, doc):
    """(context, continuations, target, audio) as lm-eval builds them without a chat template."""
    ctx = task.fewshot_context(doc, 0, gen_prefix=task.doc_to_prefix(doc))
    reqs = task.construct_requests(doc, ctx, metadata=(task.config.task, 0, 1))
    return ctx, [r.arguments[1] for r in reqs], task.doc_to_target(doc), reqs[0].arguments[2]["audio"]


def test_registered(task_manager):
    names = set(task_manager.all_tasks)
    for track in FOLDER:
        for suffix in ("", "_p1", "_p2", "_p3", "_single", "_multi"):
            assert f"sakura_{track}{suffix}" in names
    for group in ("sakura", "sakura_p1", "sakura_p2", "sakura_p3"):
        assert group in task_manager.all_groups


@needs_sample
@pytest.mark.parametrize("track", list(FOLDER))
def test_table_i_prompts_render(task_manager, track):
    names = [f"sakura_{track}", f"sakura_{track}_p1", f"sakura_{track}_p2", f"sakura_{track}_p3"]
    tasks = load_tasks(task_manager, names)
    rows = csv_rows(track)
    expected_user = {names[0]: TABLE_I[track]["p3"], names[1]: "", names[2]: TABLE_I[track]["p2"],
                     names[3]: TABLE_I[track]["p3"]}
    prefix = TABLE_I[track]["prefix"]
    for name in names:
        task = tasks[name]
        docs = task.test_docs()
        assert len(docs) == len(rows) == 36
        doc = docs[0]
        ctx, conts, target, audio = render(task, doc)
        user = expected_user[name]
        assert doc["user_prompt"] == user
        assert doc["assistant_prefix"] == prefix
        assert ctx == (f"{user} {prefix}" if user else prefix)
        assert conts == [" " + lab for lab in LABELS[track]]
        assert doc["choices"] == LABELS[track]
        by_file = {r["file"]: r for r in rows}
        row = by_file[doc["doc_id"]]  # docs come in the label-balanced order, not the csv's
        label = row["attribute_label"].strip()
        assert LABELS[track].index(label) == doc["gold"] and target == label  # logged target: the gold choice
        assert doc["label"] == label
        assert audio == [str((SAMPLE / "data" / FOLDER[track] / "audio" / row["file"]).resolve())]
        # every doc's gold is its csv label; the default set is every clip of the track
        assert sorted(d["doc_id"] for d in docs) == sorted(by_file)
        assert all(d["label"] == by_file[d["doc_id"]]["attribute_label"].strip() for d in docs)


LETTERED_FIRST_ROW = {  # (track, kind) -> (choices, option texts, gold) for the first csv row, read by hand
    ("animal", "single"): (["a", "b", "c", "d"], ["rooster", "dog", "hen", "cat"], 3),
    ("animal", "multi"): (["a", "b", "c", "d"], ["Chirping", "Croaking", "Meowing", "Mooing"], 2),
    ("gender", "single"): (["a", "b"], ["Female", "Male"], 0),
    ("gender", "multi"): (["a", "b"], ["Ms.", "Mr."], 0),
    ("emotion", "single"): (["a", "b", "c", "d"], ["disgust", "fear", "sad", "angry"], 3),
    ("language", "multi"): (["a", "b", "c", "d"], ["Cornish Pasty", "Mooncakes", "Risotto", "Spätzle"], 1),
}


@needs_sample
@pytest.mark.parametrize("track,kind", sorted(LETTERED_FIRST_ROW))
def test_lettered_render(task_manager, track, kind):
    task = load_tasks(task_manager, [f"sakura_{track}_{kind}"])[f"sakura_{track}_{kind}"]
    row = csv_rows(track)[0]
    doc = next(d for d in task.test_docs() if d["doc_id"] == row["file"])  # docs are in label-balanced order
    choices, texts, gold = LETTERED_FIRST_ROW[(track, kind)]
    ctx, conts, target, _ = render(task, doc)
    assert doc["user_prompt"] == row[f"{kind}_instruction"].strip()
    assert doc["assistant_prefix"] == "The answer is ("
    assert ctx.endswith("The answer is (")
    assert conts == choices  # target delimiter "": the letter is the next token after "("
    assert doc["options"] == texts and gold == doc["gold"] and target == choices[gold]  # logged: the gold letter


@needs_sample
@pytest.mark.parametrize("track", list(FOLDER))
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_lettered_parsing_all_sample_rows(track, kind):
    docs = sakura.load_sakura(track, kind, data_root=SAMPLE, split="all")["test"]
    by_id = {d["doc_id"]: d for d in docs}
    assert len(by_id) == len(csv_rows(track))
    for row in csv_rows(track):
        doc = by_id[row["file"]]
        instruction = row[f"{kind}_instruction"]
        n = len(re.findall(r"\([a-z]\)", instruction))
        assert doc["choices"] == [chr(ord("a") + k) for k in range(n)]
        letter = row[f"{kind}_answer"].strip()[1]
        assert doc["choices"][doc["gold"]] == letter
        assert row[f"{kind}_answer"].strip().endswith(doc["options"][doc["gold"]])
        assert doc["label"] == row["attribute_label"].strip()


@needs_sample
def test_emotion_leading_space_answers():
    rows = csv_rows("emotion")
    spaced = [i for i, r in enumerate(rows) if r["single_answer"].startswith(" ")]
    assert spaced, "the sample should contain Emotion answers with a leading space"
    docs = sakura.load_sakura("emotion", "single", data_root=SAMPLE, split="all")["test"]
    by_id = {d["doc_id"]: d for d in docs}
    for i in spaced:
        d = by_id[rows[i]["file"]]
        assert d["choices"][d["gold"]] == rows[i]["single_answer"].strip()[1]
    assert sakura.parse_answer(" (d) angry", ["a", "b", "c", "d"], ["disgust", "fear", "sad", "angry"]) == 3


def test_parse_options_and_answers():
    q, letters, texts = sakura.parse_options("Pick one (e.g. the loud one). (a) Dog barking (b) Cat (c) Cow.")
    assert q == "Pick one (e.g. the loud one)."
    assert letters == ["a", "b", "c"] and texts == ["Dog barking", "Cat", "Cow."]
    assert sakura.parse_answer("(c) cow", letters, texts) == 2
    assert sakura.parse_answer("(b)", letters, texts) == 1
    assert sakura.parse_answer("Cat", letters, texts) == 1
    with pytest.raises(ValueError, match="not among the options"):
        sakura.parse_answer("(d) pig", letters, texts, "row 7")
    with pytest.raises(ValueError, match="not among the options"):
        sakura.parse_answer("(a) cat", letters, texts)
    with pytest.raises(ValueError, match="no lettered options"):
        sakura.parse_options("What is it?")


# ---------------------------------------------------------------- local checkout errors


def write_checkout(root: Path, rows, track="Gender", columns=None, wavs=True):
    d = root / "data" / track
    (d / "audio").mkdir(parents=True)
    columns = columns or ["file", "attribute_label", "single_instruction", "single_answer",
                          "multi_instruction", "multi_answer"] + (["split"] if "split" in rows[0] else [])
    with (d / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if wavs:
        for r in rows:
            sf.write(str(d / "audio" / r["file"]), np.zeros(160, dtype="float32"), 16000)
    return d


def gender_row(i, label="female", answer="(a) Female", **extra):
    return {"file": f"clip{i}.wav", "attribute_label": label,
            "single_instruction": "Who speaks? (a) Female (b) Male", "single_answer": answer,
            "multi_instruction": "Address? (a) Ms. (b) Mr.", "multi_answer": "(a) Ms.", **extra}


def test_missing_data_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        sakura.load_sakura("gender", data_root=missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"data/Gender"):
        sakura.load_sakura("gender", data_root=tmp_path / "empty")


def test_missing_metadata_columns_and_wavs(tmp_path):
    (tmp_path / "a" / "data" / "Gender" / "audio").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "a" / "data" / "Gender" / "metadata.csv"))):
        sakura.load_sakura("gender", data_root=tmp_path / "a")
    d = write_checkout(tmp_path / "b", [gender_row(0)], columns=["file", "attribute_label"])
    assert len(sakura.load_sakura("gender", "p3", data_root=tmp_path / "b", split="all")["test"]) == 1
    with pytest.raises(ValueError, match=r"metadata.csv: missing columns \['single_instruction', 'single_answer'\]"):
        sakura.load_sakura("gender", "single", data_root=tmp_path / "b")
    d = write_checkout(tmp_path / "c", [gender_row(0), gender_row(1)], wavs=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(d / "audio" / "clip0.wav"))):
        sakura.load_sakura("gender", data_root=d.parent)  # data_root may be the data/ folder itself


def test_unknown_label_and_answer_errors(tmp_path):
    write_checkout(tmp_path / "a", [gender_row(0), gender_row(1, label="robot")])
    with pytest.raises(ValueError) as err:
        sakura.load_sakura("gender", data_root=tmp_path / "a", split="all")
    msg = str(err.value)
    assert "metadata.csv" in msg and "row 2" in msg and "clip1.wav" in msg and "'robot'" in msg
    assert "['male', 'female']" in msg
    write_checkout(tmp_path / "b", [gender_row(0), gender_row(1, answer="(c) Child")])
    with pytest.raises(ValueError, match=r"row 2 \(file 'clip1.wav'\), column single_answer: answer '\(c\) Child'"):
        sakura.load_sakura("gender", "single", data_root=tmp_path / "b", split="all")


def test_labels_normalised_and_env_root(tmp_path, monkeypatch):
    write_checkout(tmp_path, [gender_row(0, label=" Male "), gender_row(1, label="FEMALE")])
    monkeypatch.setenv("SAKURA_DATA_ROOT", str(tmp_path))
    docs = sakura.load_sakura("gender", split="all")["test"]
    got = {d["doc_id"]: (d["label"], d["gold"]) for d in docs}
    assert got == {"clip0.wav": ("male", 0), "clip1.wav": ("female", 1)}


def test_split_column(tmp_path):
    splits = ["train", "calibration", "evaluation", "evaluation", "train", "calibration"]
    rows = [gender_row(i, label="male" if i % 2 else "female", split=s) for i, s in enumerate(splits)]
    write_checkout(tmp_path, rows)
    ids = {s: sorted(sakura.load_sakura("gender", data_root=tmp_path, split=s)["test"]["doc_id"])
           for s in ("calibration", "evaluation", "train", "all")}
    assert ids["calibration"] == ["clip1.wav", "clip5.wav"]
    assert ids["evaluation"] == ["clip2.wav", "clip3.wav"]
    assert ids["train"] == ["clip0.wav", "clip4.wav"]
    assert len(ids["all"]) == 6
    # a dataset with its own split column defaults to its evaluation split (the demo set has a train split)
    assert sorted(sakura.load_sakura("gender", data_root=tmp_path)["test"]["doc_id"]) == ids["evaluation"]


@needs_sample
def test_calibration_evaluation_split_on_sample():
    parts = {s: sakura.load_sakura("emotion", data_root=SAMPLE, split=s)["test"] for s in ("calibration", "evaluation")}
    cal, ev = (set(parts[s]["doc_id"]) for s in ("calibration", "evaluation"))
    assert not cal & ev and cal | ev == {r["file"] for r in csv_rows("emotion")}
    assert len(cal) == round(0.2 * 36)
    again = sakura.load_sakura("emotion", data_root=SAMPLE, split="calibration")["test"]["doc_id"]
    assert again == parts["calibration"]["doc_id"]


def test_hub_rows_written_to_cache(tmp_path, monkeypatch):
    """The Hugging Face path, with load_dataset replaced by a local Dataset (the hub is not reachable)."""
    sr = 16000
    waves = [np.sin(np.linspace(0, 100 * (k + 1), sr // 10)).astype("float32") * 0.5 for k in range(2)]
    payloads = []
    for w in waves:
        path = tmp_path / f"w{len(payloads)}.wav"
        sf.write(str(path), w, sr, subtype="PCM_16")
        payloads.append({"bytes": path.read_bytes(), "path": f"clip{len(payloads)}.wav"})
    ds = datasets.Dataset.from_dict({
        "audio": payloads, "attribute_label": ["male", "Female"],
        "single_instruction": ["Who? (a) Male (b) Female"] * 2, "single_answer": ["(a) Male", " (b) Female"],
        "multi_instruction": ["X? (a) Mr. (b) Ms."] * 2, "multi_answer": ["(a) Mr.", "(b) Ms."],
    }).cast_column("audio", datasets.Audio())
    seen = {}

    def fake_load_dataset(name, split=None, **kw):
        seen["args"] = (name, split)
        return ds

    monkeypatch.setattr(sakura.datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv("AUDIO_LALM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SAKURA_DATA_ROOT", raising=False)
    docs = sakura.load_sakura("gender", "single", split="all")["test"]
    assert seen["args"] == ("SLLM-multi-hop/GenderQA", "test")
    assert {d["doc_id"]: d["gold"] for d in docs} == {"clip0.wav": 0, "clip1.wav": 1}
    for doc in docs:
        w = waves[int(doc["doc_id"][4])]  # clipK.wav
        assert doc["audio"].startswith(str(tmp_path / "cache" / "sakura" / "Gender"))
        data, rate = sf.read(doc["audio"], dtype="float32")
        assert rate == sr and np.allclose(data, w, atol=1 / 32768 + 1e-6)
    mtime = Path(docs[0]["audio"]).stat().st_mtime_ns
    sakura.load_sakura("gender", "p3", split="all")
    assert Path(docs[0]["audio"]).stat().st_mtime_ns == mtime  # written once


# ---------------------------------------------------------------- metrics


class LogLik(float):
    """Float with the first-token log-prob, like audio_tasks.scoring.LogLik."""

    def __new__(cls, value, first):
        obj = super().__new__(cls, value)
        obj.first_token_logprob = first
        return obj


def gender_doc(label, prompt="p3"):
    return sakura.build_doc("gender", prompt, gender_row(0, label=label, answer="(a) Female" if label == "female"
                                                             else "(b) Male"), "/x.wav", "x.wav", "test")


def test_process_results_by_hand():
    female = gender_doc("female")  # gold index 1 of [male, female]
    # summed log-probs prefer "female" (-3 > -4); first tokens prefer "male" (-0.5 > -1.0)
    res = task_utils.process_results(female, [(LogLik(-4.0, -0.5), False), (LogLik(-3.0, -1.0), False)])
    assert res == {"acc": 1.0, "acc_first_token": 0.0, "acc_label_male": None, "acc_label_female": 1.0,
                   "balanced_acc": ("female", "female")}
    # plain floats: the first-token criterion falls back to the summed log-prob
    male = gender_doc("male")
    res = task_utils.process_results(male, [(-2.0, False), (-1.0, True)])
    assert res == {"acc": 0.0, "acc_first_token": 0.0, "acc_label_male": 0.0, "acc_label_female": None,
                   "balanced_acc": ("male", "female")}
    # lettered task: a wrong pick reports the chosen option's text
    single = gender_doc("male", "single")  # options [Female, Male], gold b
    res = task_utils.process_results(single, [(LogLik(-1.0, -1.0), False), (LogLik(-2.0, -0.1), False)])
    assert res["acc"] == 0.0 and res["acc_first_token"] == 1.0 and res["balanced_acc"] == ("male", "Female")


def test_aggregations_by_hand():
    assert task_utils.mean_skip_none([None, 1.0, 0.0, None, 1.0]) == pytest.approx(2 / 3)
    assert math.isnan(task_utils.mean_skip_none([None, None]))
    # male: 2 of 3 right; female: 0 of 1 right -> (2/3 + 0) / 2
    pairs = [("male", "male"), ("male", "male"), ("male", "female"), ("female", "male")]
    assert task_utils.balanced_accuracy(pairs) == pytest.approx(1 / 3)


@needs_sample
def test_evaluate_end_to_end(task_manager):
    """lm-eval's evaluator with a fake model: summed log-probs always pick choice 0, first tokens pick gold."""
    from lm_eval.api.model import LM
    from lm_eval.evaluator import evaluate

    class Fake(LM):
        MULTIMODAL = True

        def loglikelihood(self, requests):
            return [(LogLik(0.0 if r.idx == 0 else -1.0, 0.0 if r.idx == r.doc["gold"] else -5.0), False)
                    for r in requests]

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            raise NotImplementedError

    res = evaluate(Fake(), task_manager.load(["sakura"]), bootstrap_iters=0, log_samples=False)["results"]
    accs = []
    for track, labels in LABELS.items():
        r = res[f"sakura_{track}"]
        gold_labels = [row["attribute_label"].strip() for row in csv_rows(track)]
        acc = gold_labels.count(labels[0]) / len(gold_labels)
        accs.append(acc)
        assert r["acc,none"] == pytest.approx(acc)
        assert r["acc_first_token,none"] == 1.0
        assert r[f"acc_label_{labels[0]},none"] == 1.0
        present = sorted(set(gold_labels))
        for lab in labels[1:]:
            assert r[f"acc_label_{lab},none"] == 0.0 if lab in present else math.isnan(r[f"acc_label_{lab},none"])
        assert r["balanced_acc,none"] == pytest.approx(1 / len(present))
    assert res["sakura"]["acc,none"] == pytest.approx(sum(accs) / 4)
