"""MMAU test-mini as task documents (multiple choice, scored on the option letter).

Document: user_prompt = ``question + "\\n" + "(A) Man\\n(B) Woman\\n..."``, assistant_prefix ``"The answer is ("``,
choices = the letters ``"A"``.. (2 to 8 options), no delimiter, so each continuation is one letter; gold is the
index of the answer (an ``"(A) "`` prefix on answer or choices is ignored when matching the text) and ``golds`` every
index whose option text is the answer text (16 test-mini items repeat the answer among the options; MMAU's own
evaluation matches by text, so each copy is correct). Extra fields: ``split`` (calibration / evaluation
membership),
``task`` (sound / music / speech), ``difficulty``, ``category`` (one-element lists flattened), ``sub_category``,
``dataset``, ``question``, ``options`` (option texts).

Sources (metadata keys):

* ``mmau_json`` (the official ``mmau-test-mini.json``) + ``mmau_audio_dir`` (folder with ``<id>.wav``; each
  ``audio_id`` such as ``./test-mini-audios/<id>.wav`` is resolved there by its base name; default: the
  ``test-mini-audios`` folder next to the JSON). Paths are stored as they are; the model decodes.
* ``mmau_hf_path``: a local Hugging Face copy (``save_to_disk`` folder or anything ``load_dataset`` reads) with
  the upstream columns ``context`` (audio), ``instruction``, ``choices``, ``answer``, ``other_attributes`` (JSON
  string with id, task, difficulty, sub-category, ...); default ``gamma-lab-umd/MMAU-test-mini`` from the hub.
  Audio is decoded with soundfile and written once to the cache.
* ``mmau_limit_ids``: optional list (or comma-separated string) of ids to keep, applied after the split.

The calibration / evaluation split (:mod:`audio_tasks.data.splits`) is drawn on all items, stratified by
``task``, before the per-task filter, so a task's calibration items are the same for the group and alone.
Default: all items (1,000 = 333 sound + 334 music + 333 speech on the current test-mini).

Order: each domain's items in a seeded interleave (:func:`audio_tasks.data.splits.balanced_order`) over
sub-categories (sorted, taking turns) and, inside a sub-category, over difficulties, so that ``--limit N``
spans the sub-categories and difficulties.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets

from audio_tasks.data.audio_cache import cache_audio
from audio_tasks.data.splits import balanced_order, select_split, split_membership, split_options

DEFAULT_HF = "gamma-lab-umd/MMAU-test-mini"
MMAU_TASKS = ("sound", "music", "speech")
DIFFICULTIES = ("easy", "medium", "hard")
LETTERS = "ABCDEFGH"
ASSISTANT_PREFIX = "The answer is ("
_LETTER_PREFIX = re.compile(r"^\s*\(([A-Ha-h])\)\s*")


def strip_letter(text) -> tuple[str | None, str]:
    """``"(A) Man"`` -> ``("A", "Man")``; ``"Man"`` -> ``(None, "Man")``."""
    text = str(text)
    m = _LETTER_PREFIX.match(text)
    return (m.group(1).upper(), text[m.end():].strip()) if m else (None, text.strip())


def _flat(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def order_key(rec: dict) -> tuple[str, str, str]:
    """Levels of the balanced order: domain, sub-category, difficulty."""
    return (str(rec.get("task") or ""), _flat(rec.get("sub-category")),
            str(rec.get("difficulty") or "").strip().lower())


def correct_indices(options: list[str], answer: str) -> list[int]:
    """Every option whose text is the answer text (MMAU's own evaluation matches by text, so a repeated
    option counts wherever it stands); exact matches, else case-insensitive ones."""
    exact = [k for k, o in enumerate(options) if o == answer]
    if exact:
        return exact
    return [k for k, o in enumerate(options) if o.casefold() == answer.casefold()]


def build_doc(rec: dict, audio: str) -> dict:
    """Document from an official-JSON-style record (``id, question, choices, answer, task, ...``)."""
    qid = str(rec["id"])
    options = [strip_letter(c)[1] for c in rec["choices"]]
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"MMAU item {qid}: {len(options)} choices, expected 2 to {len(LETTERS)}")
    letters = list(LETTERS[:len(options)])
    letter, answer = strip_letter(rec["answer"])
    golds = correct_indices(options, answer) if answer else []
    if not golds and not answer and letter in letters:
        golds = [letters.index(letter)]
    gold = golds[0] if golds else None
    if gold is None:
        raise ValueError(f"MMAU item {qid}: answer {rec['answer']!r} is not among the choices {rec['choices']!r}")
    question = str(rec["question"]).strip()
    listing = "\n".join(f"({a}) {o}" for a, o in zip(letters, options))
    return {
        "doc_id": qid, "audio": str(audio),
        "user_prompt": f"{question}\n{listing}", "assistant_prefix": ASSISTANT_PREFIX,
        "choices": letters, "options": options, "gold": gold, "golds": golds, "label": options[gold],
        "question": question, "task": str(rec.get("task") or ""),
        "difficulty": str(rec.get("difficulty") or "").strip().lower(),
        "category": _flat(rec.get("category")), "sub_category": _flat(rec.get("sub-category")),
        "dataset": _flat(rec.get("dataset")),
    }


def read_json(json_path, audio_dir=None) -> list[dict]:
    """Records of the official JSON; ``_audio`` is the resolved (not yet checked) path."""
    json_path = Path(str(json_path)).expanduser()
    if not json_path.is_file():
        raise FileNotFoundError(f"MMAU JSON {json_path} not found")
    records = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{json_path}: expected a JSON list of items")
    audio_dir = Path(str(audio_dir)).expanduser() if audio_dir else json_path.parent / "test-mini-audios"
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"MMAU audio folder {audio_dir} not found (set metadata mmau_audio_dir)")
    required = ("id", "question", "choices", "answer", "task")
    for n, rec in enumerate(records):
        missing = [k for k in required if k not in rec]
        if missing:
            raise ValueError(f"{json_path}: item {n} (id {rec.get('id')!r}) lacks fields {missing}")
        name = Path(str(rec.get("audio_id") or f"{rec['id']}.wav")).name
        if name in ("", ".", ".."):  # only base names, resolved inside the audio folder
            raise ValueError(f"{json_path}: item {n} (id {rec.get('id')!r}) has audio_id {rec.get('audio_id')!r}, "
                             f"which names no file inside {audio_dir}")
        rec["_audio"] = str((audio_dir / name).resolve())
    return records


def _open_hf(path_or_name: str):
    p = Path(str(path_or_name)).expanduser()
    if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
        ds = datasets.load_from_disk(str(p))
    else:
        try:
            ds = datasets.load_dataset(str(path_or_name))
        except Exception as e:  # no network, no hub access, not cached
            from audio_tasks.data.errors import hub_unavailable

            raise hub_unavailable(str(path_or_name), [
                "--metadata '{\"mmau_json\": \"/path/mmau-test-mini.json\", "
                "\"mmau_audio_dir\": \"/path/test-mini-audios\"}' "
                "(the official JSON + its audio folder)",
                "--metadata '{\"mmau_hf_path\": \"/path/to/saved/copy\"}' (a local Hugging Face copy, save_to_disk "
                "folder or anything load_dataset reads)",
                f"access to the Hugging Face hub (dataset {path_or_name})"], e) from None
    if isinstance(ds, datasets.DatasetDict):
        for name in ("test", "test_mini", "test-mini"):
            if name in ds:
                return ds[name]
        if len(ds) != 1:
            raise ValueError(f"MMAU {path_or_name}: cannot choose among splits {list(ds)}")
        ds = next(iter(ds.values()))
    return ds


def read_hf(path_or_name: str = DEFAULT_HF) -> list[dict]:
    """Records (official-JSON field names) of a Hugging Face copy; ``_audio`` holds the undecoded audio."""
    ds = _open_hf(path_or_name)
    missing = [c for c in ("context", "instruction", "choices", "answer", "other_attributes")
               if c not in ds.column_names]
    if missing:
        raise ValueError(f"MMAU {path_or_name}: missing columns {missing} (found {ds.column_names})")
    ds = ds.cast_column("context", datasets.Audio(decode=False))
    records = []
    for n, row in enumerate(ds):
        attrs = row["other_attributes"]
        attrs = json.loads(attrs) if isinstance(attrs, str) else dict(attrs or {})
        rec = {**attrs, "question": row["instruction"], "choices": list(row["choices"]),
               "answer": row["answer"], "_audio": row["context"]}
        rec["id"] = str(attrs.get("id") or f"item{n:05d}")
        if not rec.get("task"):
            raise ValueError(f"MMAU {path_or_name}: item {rec['id']} has no 'task' in other_attributes")
        records.append(rec)
    return records


def _limit_ids(value) -> set[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split(",")
    return {str(v).strip() for v in value if str(v).strip()}


def load_mmau(task: str | None = None, mmau_json=None, mmau_audio_dir=None, mmau_hf_path=None,
              mmau_limit_ids=None, **meta):
    """lm-eval ``custom_dataset``: ``{"test": Dataset}`` of one MMAU task (sound/music/speech) or all (None)."""
    if task is not None and task not in MMAU_TASKS:
        raise ValueError(f"unknown MMAU task {task!r}; expected one of {list(MMAU_TASKS)}")
    from_json = bool(mmau_json)
    records = read_json(mmau_json, mmau_audio_dir) if from_json else read_hf(mmau_hf_path or DEFAULT_HF)
    opts = split_options(meta)
    domains = [r["task"] for r in records]
    keep = select_split(domains, opts["split"], opts["seed"], opts["fraction"], where="MMAU")
    member = split_membership(domains, opts["seed"], opts["fraction"])
    for i, r in enumerate(records):
        r["_split"] = member[i]
    wanted = _limit_ids(mmau_limit_ids)
    records = [records[i] for i in keep
               if (task is None or records[i]["task"] == task) and (wanted is None or str(records[i]["id"]) in wanted)]
    records = [records[j] for j in balanced_order([order_key(r) for r in records], opts["seed"])]
    if from_json:
        absent = [r["_audio"] for r in records if not Path(r["_audio"]).is_file()]
        if absent:
            raise FileNotFoundError(f"MMAU: {len(absent)} audio file(s) missing, e.g. {absent[:3]}")
    docs = [{**build_doc(r, r["_audio"] if from_json else cache_audio(r["_audio"], "mmau/test-mini", r["id"])),
             "split": r["_split"]} for r in records]
    if not docs:
        raise ValueError(f"MMAU: no items for task={task!r}, split={opts['split']!r}, ids={mmau_limit_ids!r}")
    return {"test": datasets.Dataset.from_list(docs)}
