"""SAKURA attribute tracks (Gender, Language, Emotion, Animal) as task documents.

Prompts (AudioLens, Table I; the audio always opens the USER turn):

* ``p1`` direct: user_prompt ``""``, assistant_prefix e.g. ``"The speaker's gender is"``;
* ``p2`` QA: user_prompt = the track question;
* ``p3`` multiple choice: the question + ``" Possible options: male, female."`` (labels in the paper's order).

For p1/p2/p3 the choices are the track's labels (scored as ``" male"``, ``" female"``...), gold is the index of
the row's ``attribute_label`` (matched after strip + case folding).

``single`` / ``multi`` use SAKURA's own single-hop / multi-hop instruction, which ends with lettered options
``"(a) Female (b) Male"``. They are scored like the MMAU protocol: the assistant turn opens with
``"The answer is ("`` and the choices are the option letters ``"a"``, ``"b"``... (no delimiter), so the model
is scored on the option label as the next token. Gold is the letter of ``single_answer`` / ``multi_answer``
(``"(d) cat"``, possibly with a leading space); the answer's text must match that option's text.

Sources (first that applies): metadata ``data_root`` or env ``SAKURA_DATA_ROOT`` -> a local checkout
(``<root>/data/<Track>/metadata.csv`` + ``audio/*.wav``; ``root`` may also be the ``data`` folder itself);
otherwise the Hugging Face copies ``SLLM-multi-hop/<Track>QA`` (split ``test``) whose audio is written once to
the cache (see :mod:`audio_tasks.data.audio_cache`). Split selection: :mod:`audio_tasks.data.splits` (default:
all clips; each doc's ``split`` field says whether it belongs to the calibration or the evaluation split).

Order of the documents: a seeded interleave by label (:func:`audio_tasks.data.splits.balanced_order`): labels
take turns in sorted order (``female, male, female, ...``), each label's clips in a shuffled order fixed by
``split_seed``; so ``--limit N`` covers every label as evenly as possible.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import datasets

from audio_tasks.data.audio_cache import cache_audio
from audio_tasks.data.sakura_tracks import TRACKS, Track
from audio_tasks.data.sakura_tracks import p3_user_prompt as _p3
from audio_tasks.data.splits import balanced_order, select_split, split_membership, split_options

PROMPTS = ("p1", "p2", "p3", "single", "multi")
LETTERED_PROMPT_PREFIX = "The answer is ("
BASE_COLUMNS = ("attribute_label",)
LETTERED_COLUMNS = {"single": ("single_instruction", "single_answer"),
                    "multi": ("multi_instruction", "multi_answer")}


def get_track(track: str) -> Track:
    """Return the SAKURA track named ``track`` (case-insensitive); ValueError if unknown."""
    key = str(track).strip().lower()
    if key not in TRACKS:
        raise ValueError(f"unknown SAKURA track {track!r}; expected one of {list(TRACKS)}")
    return TRACKS[key]


def p3_user_prompt(track: str) -> str:
    """Return the P3 user prompt of ``track``."""
    return _p3(get_track(track))


def normalise_label(track: str, raw, where: str) -> str:
    """The canonical label (paper casing) of ``raw``; ValueError naming ``where`` if unknown."""
    t = get_track(track)
    key = str(raw).strip().casefold()
    for lab in t.labels:
        if lab.casefold() == key:
            return lab
    raise ValueError(f"{where}: unknown {t.folder} label {raw!r}; valid labels: {list(t.labels)}")


_OPTION = re.compile(r"\(([A-Za-z])\)")
_ANSWER = re.compile(r"^\s*\(([A-Za-z])\)\s*(.*?)\s*$", re.S)


def _norm_text(s: str) -> str:
    return " ".join(str(s).split()).rstrip(".").casefold()


def parse_options(instruction: str, where: str = "instruction") -> tuple[str, list[str], list[str]]:
    """Split ``"Question? (a) x (b) y"`` into ``(question, ["a", "b"], ["x", "y"])``.

    The options are the last run of markers ``(a)``, ``(b)``, ... in alphabetical order that reaches the end
    of the text, so a stray ``(x)`` inside the question does not count. Letters are returned lower-case.
    """
    marks = list(_OPTION.finditer(instruction))
    start = None
    for i in range(len(marks) - 1, -1, -1):  # the last "(a)" from which letters run a, b, c... to the end
        run = [m.group(1).lower() for m in marks[i:]]
        if run[0] == "a" and run == [chr(ord("a") + k) for k in range(len(run))]:
            start = i
            break
    if start is None or len(marks) - start < 2:
        raise ValueError(f"{where}: no lettered options '(a) ... (b) ...' found in {instruction!r}")
    marks = marks[start:]
    letters = [m.group(1).lower() for m in marks]
    texts = [instruction[m.end():(marks[k + 1].start() if k + 1 < len(marks) else len(instruction))].strip()
             for k, m in enumerate(marks)]
    if any(not t for t in texts):
        raise ValueError(f"{where}: empty option text in {instruction!r}")
    return instruction[:marks[0].start()].strip(), letters, texts


def parse_answer(answer: str, letters: list[str], texts: list[str], where: str = "answer") -> int:
    """Index of ``answer`` (``"(d) cat"``, ``" (d) cat"``, ``"(d)"`` or ``"cat"``) among the options."""
    m = _ANSWER.match(str(answer))
    if m:
        letter, text = m.group(1).lower(), m.group(2)
        if letter in letters:
            k = letters.index(letter)
            if not text or _norm_text(text) == _norm_text(texts[k]):
                return k
    else:
        matches = [k for k, t in enumerate(texts) if _norm_text(t) == _norm_text(answer)]
        if len(matches) == 1:
            return matches[0]
    options = " ".join(f"({a}) {t}" for a, t in zip(letters, texts))
    raise ValueError(f"{where}: answer {answer!r} is not among the options {options!r}")


def build_doc(track: str, prompt: str, row: dict, audio: str, doc_id: str, where: str) -> dict:
    """One task document (docs/CONTRACTS.md) from a metadata row; ``where`` names the row in errors."""
    t = get_track(track)
    prompt = str(prompt).lower()
    label = normalise_label(track, row["attribute_label"], where)
    doc = {"doc_id": str(doc_id), "audio": str(audio), "track": t.folder, "prompt": prompt,
           "label": label, "label_set": list(t.labels)}
    if prompt in ("p1", "p2", "p3"):
        user = {"p1": "", "p2": t.question, "p3": p3_user_prompt(track)}[prompt]
        return {**doc, "user_prompt": user, "assistant_prefix": t.prefix, "choices": list(t.labels),
                "options": list(t.labels), "gold": t.labels.index(label)}
    if prompt not in LETTERED_COLUMNS:
        raise ValueError(f"unknown SAKURA prompt {prompt!r}; expected one of {list(PROMPTS)}")
    instr_col, answer_col = LETTERED_COLUMNS[prompt]
    instruction = str(row[instr_col]).strip()
    _, letters, texts = parse_options(instruction, f"{where}, column {instr_col}")
    gold = parse_answer(row[answer_col], letters, texts, f"{where}, column {answer_col}")
    return {**doc, "user_prompt": instruction, "assistant_prefix": LETTERED_PROMPT_PREFIX,
            "choices": letters, "options": texts, "gold": gold}


def resolve_data_dir(data_root, track: str) -> Path:
    """``<root>/data`` (or ``root`` itself) holding ``<Track>/metadata.csv``; errors name what is missing."""
    root = Path(str(data_root)).expanduser()
    folder = get_track(track).folder
    if not root.is_dir():
        raise FileNotFoundError(f"SAKURA data_root {root} does not exist or is not a folder")
    for cand in (root / "data", root):
        if (cand / folder).is_dir():
            return cand.resolve()
    raise FileNotFoundError(f"SAKURA data_root {root}: missing track folder {root / 'data' / folder} "
                            f"(expected layout data/{folder}/metadata.csv + data/{folder}/audio/*.wav)")


def _required_columns(prompt: str) -> tuple[str, ...]:
    return BASE_COLUMNS + LETTERED_COLUMNS.get(str(prompt).lower(), ())


def read_local(track: str, data_root, prompt: str = "p3") -> list[dict]:
    """Rows of a local checkout: each row dict plus ``_id`` (file name), ``_audio`` (absolute wav path), ``_where``."""
    track_dir = resolve_data_dir(data_root, track) / get_track(track).folder
    csv_path = track_dir / "metadata.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"SAKURA checkout: missing {csv_path}")
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
    missing = [c for c in ("file",) + _required_columns(prompt) if c not in columns]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing} (found {columns})")
    if not rows:
        raise ValueError(f"{csv_path}: no rows (header only); a SAKURA metadata.csv lists one clip per row")
    out, absent = [], []
    for n, row in enumerate(rows, start=1):
        rel = Path((row["file"] or "").strip())
        if not rel.parts or rel.is_absolute() or rel.drive or any(p in ("..", ".") for p in rel.parts):
            # Every referenced file stays inside the track's audio/ folder.
            raise ValueError(f"{csv_path}, row {n}: file {row['file']!r} is not a file name inside "
                             f"{track_dir / 'audio'} (absolute paths and '..' are refused)")
        wav = track_dir / "audio" / rel
        if not wav.is_file():
            absent.append(str(wav))
        out.append({**row, "_id": row["file"].strip(), "_audio": str(wav.resolve()),
                    "_where": f"{csv_path}, row {n} (file {row['file'].strip()!r})"})
    if absent:
        raise FileNotFoundError(f"{csv_path}: {len(absent)} audio file(s) missing, e.g. {absent[:3]}")
    return out


def read_hub(track: str, prompt: str = "p3", hf_name: str | None = None) -> list[dict]:
    """Rows of the Hugging Face copy (audio left undecoded in ``_audio``; written to the cache later)."""
    name = hf_name or get_track(track).hf_name
    try:
        ds = datasets.load_dataset(name, split="test")
    except Exception as e:  # no network, no hub access, not cached
        from audio_tasks.data.errors import hub_unavailable

        folder = get_track(track).folder
        raise hub_unavailable(name, [
            f"--metadata '{{\"data_root\": \"/path/to/sakura\"}}' (a local checkout: data/{folder}/metadata.csv "
            f"+ data/{folder}/audio/*.wav)",
            "the environment variable SAKURA_DATA_ROOT=/path/to/sakura (same layout)",
            f"access to the Hugging Face hub (dataset {name}; log in or set HF_HOME to a cache holding it)"],
            e) from None
    missing = [c for c in ("audio",) + _required_columns(prompt) if c not in ds.column_names]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (found {ds.column_names})")
    return rows_from_hf(ds.cast_column("audio", datasets.Audio(decode=False)), track, name)


def rows_from_hf(ds: datasets.Dataset, track: str, name: str) -> list[dict]:
    """Convert a Hugging Face SAKURA split to row dicts with an id, the audio and a location for errors."""
    out = []
    for n, row in enumerate(ds):
        audio = row["audio"] or {}
        file = row.get("file") or (Path(audio.get("path") or "").name if isinstance(audio, dict) else "")
        file = file or f"{get_track(track).folder.lower()}_{n:05d}.wav"
        where = f"{name}, row {n} (file {file!r})"
        out.append({**row, "_id": file, "_audio": audio, "_where": where})  # pyright: ignore[reportGeneralTypeIssues]
    return out


def load_sakura(track: str, prompt: str = "p3", data_root=None, **meta):
    """lm-eval ``custom_dataset``: returns ``{"test": Dataset}`` with the docs of the selected split.

    Metadata keys: ``data_root``, ``split`` (default: see :func:`audio_tasks.data.splits.default_split`),
    ``split_seed``, ``calibration_fraction`` (others are ignored).
    """
    root = data_root or os.environ.get("SAKURA_DATA_ROOT") or None
    rows = read_local(track, root, prompt) if root else read_hub(track, prompt)
    labels = [normalise_label(track, r["attribute_label"], r["_where"]) for r in rows]
    split_col = [r["split"] for r in rows] if rows and "split" in rows[0] else None
    opts = split_options(meta, has_split_column=split_col is not None)
    keep = select_split(labels, opts["split"], opts["seed"], opts["fraction"], split_col,
                        where=f"SAKURA {get_track(track).folder}")
    member = split_membership(labels, opts["seed"], opts["fraction"], split_col)
    keep = [keep[j] for j in balanced_order([labels[i] for i in keep], opts["seed"])]
    docs = []
    for i in keep:
        r = rows[i]
        audio = r["_audio"] if root else cache_audio(
            r["_audio"], f"sakura/{get_track(track).folder}", r["_id"])
        docs.append({**build_doc(track, prompt, r, audio, r["_id"], r["_where"]), "split": member[i]})
    if not docs:
        raise ValueError(f"SAKURA {get_track(track).folder}: split {opts['split']!r} selects no rows")
    return {"test": datasets.Dataset.from_list(docs)}
