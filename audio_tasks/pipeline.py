"""Streaming input pipeline for ``audio_lalm``: preparation overlaps the model.

Preparing a doc (decode + resample, mel features, chat rendering, tokenization, placeholder expansion,
continuation split) used to run for every doc before the first forward pass.  Here the requests are
grouped into docs cheaply, the docs cut into *chunks* of one batch, and background worker threads
prepare the next chunks while the main thread scores the current ones.

* Determinism: chunks and sort windows are fixed by the request list and the batch size alone, and a
  chunk's preparation is a pure function of its docs, so scores and their order are bit-identical for
  every worker count (``prep_workers=0`` prepares in-line, serially).
* Cheap per-doc preparation: the chat template is rendered once per (user prompt, assistant prefix)
  pattern; the continuation split is computed once per (prompt, continuation); the tokenizer ids of a
  prompt pattern are cached, so a doc whose clip's placeholder count is known costs a list splice; the
  remaining docs of a chunk go through the processor in **one batched call** (batched tokenization and
  batched mel features: bit-identical to per-doc calls, checked in the tests); decoded audio is cached by
  content (files by resolved path + size + mtime, in-memory arrays by a hash of their samples).
* Workers are threads (the heavy parts -- feature extraction in torch, tokenizers in Rust, the model --
  release the GIL); each has its own copy of the processor, because a Hugging Face fast tokenizer must
  not be used from two threads while one of them changes its padding settings.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from audio_tasks.requests import MAX_CACHED_CLIP_BYTES, audio_identity, encode_pair, finish_doc, group_requests
from interventions.byte_lru import ByteLRU
from interventions.engine import Tokenized, clip_key, expand_placeholders

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["Preparer", "group_requests", "ordered_prefetch", "default_workers", "parse_workers", "stream_chunks",
           "prepare_all", "may_share_prefix", "stream_loglikelihood", "CHUNK_DOCS", "WINDOW_CHUNKS"]

CHUNK_DOCS = 16  # docs per preparation job (at least one batch: max(CHUNK_DOCS, batch size))
WINDOW_CHUNKS = 4  # chunks sorted by length together before they are cut into batches


def default_workers() -> int:
    """One worker per spare core, at least one, at most four (the model keeps the rest busy)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, n - 1))


def _trimmed_whisper_class():
    """A WhisperFeatureExtractor whose STFT stops shortly after the last non-zero sample of the batch.

    The stock extractor pads every clip to the full window (30 s) and transforms all of it; the frames
    past the audio are all-zero frames whose log-mel is the clamp value.  Here they are filled in as
    zeros before the same mel / log / clamp / scale steps, so the features are those of the stock path
    (bit-identical in the tests).  Not used when dithering (random noise in the padding)."""
    from transformers import WhisperFeatureExtractor

    class TrimmedWhisperFeatureExtractor(WhisperFeatureExtractor):
        def _torch_extract_fbank_features(self, waveform: np.ndarray, device: str = "cpu") -> np.ndarray:
            w = np.asarray(waveform, dtype=np.float32)
            rows = w if w.ndim == 2 else w[None]
            n = rows.shape[-1]
            nz = np.flatnonzero(rows.any(axis=0))
            cut = (int(nz[-1]) + 1 if nz.size else 0) + self.n_fft  # >= n_fft/2 zeros: reflection sees zeros
            cut = -(-cut // self.hop_length) * self.hop_length
            if self.dither != 0.0 or cut >= n:
                return super()._torch_extract_fbank_features(waveform, device)
            x = torch.from_numpy(np.ascontiguousarray(rows[:, :cut])).to(device, torch.float32)
            window = torch.hann_window(self.n_fft, device=device)
            stft = torch.stft(x, self.n_fft, self.hop_length, window=window, return_complex=True)
            frames = n // self.hop_length  # the stock path's frame count (its last frame dropped)
            k = min(int(stft.shape[-1]), frames)
            mel_filters = torch.from_numpy(self.mel_filters).to(device, torch.float32)
            head = torch.clamp(mel_filters.T @ (stft[..., :k].abs() ** 2).contiguous(), min=1e-10).log10()
            # all-zero frames: mel 0 -> clamp 1e-10 -> log10 = -10
            max_val = torch.clamp(head.amax(dim=(1, 2), keepdim=True), min=-10.0)
            log_spec = torch.empty((rows.shape[0], head.shape[1], frames), dtype=torch.float32, device=device)
            log_spec[..., :k] = (torch.maximum(head, max_val - 8.0) + 4.0) / 4.0
            log_spec[..., k:] = (torch.maximum(torch.full_like(max_val, -10.0), max_val - 8.0) + 4.0) / 4.0
            out = log_spec.detach().cpu().numpy()
            return out if w.ndim == 2 else out[0]

    return TrimmedWhisperFeatureExtractor


def _fast_processor(processor: Any) -> Any:
    """A copy of ``processor`` whose Whisper feature extractor (exactly that class) is the trimmed one."""
    p = copy.deepcopy(processor)
    fe = getattr(p, "feature_extractor", None)
    if fe is not None and type(fe).__name__ == "WhisperFeatureExtractor" and getattr(fe, "dither", 0.0) == 0.0:
        fe.__class__ = _trimmed_whisper_class()
    return p


def parse_workers(value: Any) -> int:
    """``prep_workers`` model argument: None/"auto" -> :func:`default_workers`; else an int >= 0."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return default_workers()
    try:
        n = int(str(value).strip())
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"prep_workers={value!r}; valid: auto or an integer >= 0 (0 = prepare in-line)")
    return n


class _LRU:
    """A small thread-safe LRU of at most ``size`` entries (text caches: prompts, token ids)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


class _ByteCache:
    """A thread-safe :class:`~interventions.byte_lru.ByteLRU` (decoded clips, bounded by their bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self._lru: ByteLRU[Any] = ByteLRU(max_bytes)
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            return self._lru.get(key)

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._lru.put(key, value)

    def __len__(self) -> int:
        return len(self._lru)


class Preparer:
    """Turns docs into scoring items for one :class:`~audio_tasks.model.AudioLALM` (thread-safe)."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.engine = lm.engine
        self._local = threading.local()
        self.render_cache = _LRU(4096)  # (context, user_prompt, assistant_prefix, n_audio, external) -> prompt
        self.split_cache = _LRU(65536)  # (prompt, continuation) -> continuation token ids
        self.text_ids_cache = _LRU(4096)  # prompt -> tokenizer ids (placeholders unexpanded)
        self.audio_cache = _ByteCache(MAX_CACHED_CLIP_BYTES)  # content key -> decoded, resampled, windowed clip
        self.stats = {"render_misses": 0, "split_misses": 0, "processor_docs": 0, "fast_docs": 0,
                      "audio_decoded": 0}
        self.warned: set[str] = set()  # audio warnings already given (audio_tasks.audio: once per run)

    # ---- per-thread processor ------------------------------------------------------------
    @property
    def processor(self) -> Any:
        """This thread's copy of the processor (with the trimmed Whisper feature extractor)."""
        p = getattr(self._local, "processor", None)
        if p is None:
            # Specs that encode each clip on its own (features padded in a batch would change the encoder's
            # output there) keep the stock processor, called one doc at a time (Engine.tokenize's behaviour).
            p = self._local.processor = (copy.deepcopy(self.engine.processor) if self.engine.spec.encode_per_clip
                                         else _fast_processor(self.engine.processor))
        return p

    @property
    def tokenizer(self) -> Any:
        p = self.processor
        return getattr(p, "tokenizer", p)

    # ---- audio -------------------------------------------------------------------------
    @staticmethod
    def _content_key(item: Any) -> str | None:
        if isinstance(item, str):
            try:
                st = os.stat(item)
            except OSError:
                return None  # load_audio raises the clear error
            return f"file:{os.path.realpath(item)}:{st.st_size}:{st.st_mtime_ns}"
        if isinstance(item, dict) and item.get("array") is None:
            b = item.get("bytes")
            if b:
                return "bytes:" + clip_key(np.frombuffer(b, dtype=np.uint8))
            p = item.get("path")
            return Preparer._content_key(p) if isinstance(p, str) else None
        arr = item["array"] if isinstance(item, dict) else item
        sr = item.get("sampling_rate") if isinstance(item, dict) else None
        a = np.ascontiguousarray(arr, dtype=np.float32)
        return f"array:{sr}:{a.shape}:" + clip_key(a.reshape(-1))

    def clips(self, aux: dict[str, Any] | None, where: str) -> list[np.ndarray]:
        from audio_tasks.audio import load_audio, warn_if_truncated

        if not aux or not aux.get("audio"):
            return []
        items = aux["audio"]
        if not isinstance(items, (list, tuple)):
            items = [items]
        sr = self.engine.sampling_rate
        window = self.engine.audio_window_s
        out = []
        for it in items:
            key = self._content_key(it)
            wav = self.audio_cache.get(key) if key else None
            if wav is None:
                wav = load_audio(it, sr, where=where, warned=self.warned)
                warn_if_truncated(len(wav), sr, window, where, warned=self.warned)
                if window:
                    wav = wav[: int(window * sr)]
                self.stats["audio_decoded"] += 1
                if key:
                    self.audio_cache.put(key, wav)
            out.append(wav)
        return out

    # ---- text --------------------------------------------------------------------------
    def render(self, context: str, doc: Any, n_audio: int) -> str:
        """``AudioLALM.render`` (:func:`audio_tasks.requests.render_prompt`), once per prompt pattern."""
        lm = self.lm
        if n_audio == 0 or lm.external_chat:
            return context
        if isinstance(doc, dict) and "user_prompt" in doc and "assistant_prefix" in doc:
            key = (None, doc["user_prompt"], doc["assistant_prefix"], n_audio)
        else:
            key = (context, None, None, n_audio)
        p = self.render_cache.get(key)
        if p is None:
            self.stats["render_misses"] += 1
            p = lm.render(context, doc, n_audio)
            self.render_cache.put(key, p)
        return p

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def split_continuation(self, prompt: str, continuation: str) -> list[int]:
        """:func:`audio_tasks.requests.encode_pair` (lm-eval's ``TemplateLM`` split), once per (prompt,
        continuation)."""
        key = (prompt, continuation)
        ids = self.split_cache.get(key)
        if ids is None:
            self.stats["split_misses"] += 1
            ids = encode_pair(self._encode, prompt, continuation)[1]
            self.split_cache.put(key, ids)
        return list(ids)

    def _text_ids(self, prompt: str) -> list[int]:
        ids = self.text_ids_cache.get(prompt)
        if ids is None:
            ids = list(self.tokenizer(prompt)["input_ids"])
            self.text_ids_cache.put(prompt, ids)
        return ids

    def _expand(self, prompt: str, counts: Sequence[int]) -> torch.Tensor | None:
        """``AudioTokenizer.expand`` on this preparer's cached tokenizer ids of ``prompt``."""
        return expand_placeholders(self._text_ids(prompt), self.engine.audio_token_id, counts)

    def tokenize_many(self, prompts: Sequence[str], clips: Sequence[Sequence[np.ndarray]]) -> list[Tokenized]:
        """``Engine.tokenize`` for many prompts: known clips by placeholder expansion of the cached
        prompt ids, the rest through one batched processor call."""
        eng = self.engine
        out: list[Tokenized | None] = [None] * len(prompts)
        slow: list[int] = []
        for i, (p, cl) in enumerate(zip(prompts, clips)):
            counts = eng.audio_tokenizer.known_counts(cl)
            if counts is not None:
                ids = self._expand(p, counts)
                if ids is not None:
                    out[i] = Tokenized(ids, list(cl), None, p)
                    self.stats["fast_docs"] += 1
                    continue
            slow.append(i)
        # One batched processor call for the docs that need it, unless the spec encodes each clip on its own or
        # the features are not one row per clip (e.g. Voxtral's 30-s windows): then one call per doc, exactly as
        # Engine.tokenize makes it.
        per_doc = bool(eng.spec.encode_per_clip)
        if slow and not per_doc:
            kwargs: dict[str, Any] = {"text": [prompts[i] for i in slow], "return_tensors": "pt",
                                      "padding": True}
            flat = [np.asarray(c, dtype=np.float32) for i in slow for c in clips[i]]
            if flat:
                kwargs["audio"] = flat
                kwargs["sampling_rate"] = eng.sampling_rate
            res = self.processor(**kwargs)
            feats_all = {k: res[k] for k in eng.spec.processor_feature_keys if k in res}
            if any(v.shape[0] != len(flat) for v in feats_all.values()):
                per_doc = True
            else:
                self.stats["processor_docs"] += len(slow)
                off = 0
                for r, i in enumerate(slow):
                    ids = res["input_ids"][r][res["attention_mask"][r].bool()].clone()
                    n = len(clips[i])
                    feats = {k: v[off: off + n].clone() for k, v in feats_all.items()} if n else {}
                    off += n
                    out[i] = self._finish(Tokenized(ids, list(clips[i]), feats, prompts[i]))
        if slow and per_doc:
            for i in slow:
                self.stats["processor_docs"] += 1
                kw: dict[str, Any] = {"text": [prompts[i]], "return_tensors": "pt"}
                if clips[i]:
                    kw["audio"] = [np.asarray(c, dtype=np.float32) for c in clips[i]]
                    kw["sampling_rate"] = eng.sampling_rate
                res = self.processor(**kw)
                feats = {k: res[k] for k in eng.spec.processor_feature_keys if k in res}
                out[i] = self._finish(Tokenized(res["input_ids"][0], list(clips[i]), feats, prompts[i]))
        return out  # type: ignore[return-value]

    def _finish(self, tok: Tokenized) -> Tokenized:
        """Record the clips' placeholder counts (for later placeholder expansion) of a processor-made prompt."""
        eng = self.engine
        if tok.clips:
            if int((tok.input_ids == eng.audio_token_id).sum()) == 0:
                raise ValueError("the rendered prompt has no audio placeholder but audio was given")
            eng.audio_tokenizer.learn(tok, self._expand)
        return tok

    # ---- docs -> items -------------------------------------------------------------------
    def items(self, groups: Sequence[dict[str, Any]]) -> list[Any]:
        """Scoring items for a chunk of docs (``group_requests`` output), in order."""
        from interventions.scoring import MCItem

        lm = self.lm
        prompts, bases, clips, conts, wheres, firsts = [], [], [], [], [], []
        for g in groups:
            req = g["req"]
            where = f"task {req.task_name}, doc {req.doc_id}"
            cl = self.clips(g["aux"], where)
            prompt = self.render(g["context"], req.doc, len(cl))
            cont_ids = [self.split_continuation(prompt, c) for c in g["conts"]]
            firsts.append(finish_doc(g, prompt, cont_ids, encode_text=self._encode, tokenizer=self.tokenizer,
                                     first_token=lm.first_token, collisions=lm.first_token_collisions,
                                     for_analysis=False))
            conts.append(cont_ids)
            n_sp = len(prompt) - len(prompt.rstrip())
            bases.append(prompt[:-n_sp] if n_sp else prompt)
            prompts.append(prompt)
            clips.append(cl)
            wheres.append(where)
        toks = self.tokenize_many(bases, clips)
        return [MCItem(t, c, {"reqs": g["reqs"], "task": g["req"].task_name, "doc_id": g["req"].doc_id,
                              "desc": w, "doc": g["req"].doc, "prompt": b}, f)
                for t, c, g, w, b, f in zip(toks, conts, groups, wheres, bases, firsts)]

    def prompts_only(self, groups: Sequence[dict[str, Any]]) -> list[tuple[str, list[np.ndarray]]]:
        """(rendered prompt, clips) per doc, for generation."""
        out = []
        for g in groups:
            req = g["req"]
            cl = self.clips(g["aux"], f"task {req.task_name}, doc {req.doc_id}")
            prompt = self.render(g["context"], req.doc, len(cl))
            if g["aux"] is not None:
                g["aux"]["rendered_prompt"] = prompt
            out.append((prompt, cl))
        return out


def ordered_prefetch(jobs: Iterable[Callable[[], Any]], workers: int, depth: int | None = None) -> Iterator[Any]:
    """Run ``jobs`` on ``workers`` threads, at most ``depth`` ahead of the consumer, and yield their
    results in order (``workers=0``: in-line, one at a time).  A job's exception is raised when its
    result is reached; the jobs not yet started are then dropped."""
    if workers <= 0:
        # Serial, but still on a helper thread: preparing on the thread that runs the model slowed the
        # model's later forward passes several-fold on the benchmark machine (cause not identified).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio_lalm_prep") as ex:
            for job in jobs:
                yield ex.submit(job).result()
        return
    depth = max(depth or 2 * workers, workers)
    it = iter(jobs)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audio_lalm_prep") as ex:
        try:
            for job in it:
                pending.append(ex.submit(job))
                if len(pending) >= depth:
                    break
            while pending:
                res = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(nxt))
                yield res
        finally:
            for f in pending:
                f.cancel()


def stream_chunks(groups: Sequence[dict[str, Any]], chunk: int) -> list[list[dict[str, Any]]]:
    """Docs cut into chunks, task by task (a chunk never spans two tasks)."""
    by_task: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    for g in groups:
        by_task.setdefault(g["req"].task_name, []).append(g)
    out = []
    for gs in by_task.values():
        out.extend(gs[i: i + chunk] for i in range(0, len(gs), chunk))
    return out


def _chunk_size(lm: Any) -> int:
    return max(CHUNK_DOCS, int(lm.batch_size_per_gpu))


def prepare_all(lm: Any, groups: Sequence[dict[str, Any]], *, desc: str = "audio_lalm preparing") -> list[Any]:
    """Every doc's scoring item now (paths that need them all: shared audio prefixes, calibration),
    prepared in chunks by the background workers, with a progress bar."""
    from tqdm import tqdm

    check_audio_files(groups)
    prep: Preparer = lm._preparer
    chunks = [list(groups[i: i + _chunk_size(lm)]) for i in range(0, len(groups), _chunk_size(lm))]
    items: list[Any] = []
    with tqdm(total=len(groups), desc=desc, disable=(lm.rank != 0 or len(chunks) < 2)) as bar:
        for part in ordered_prefetch([(lambda c=c: prep.items(c)) for c in chunks], lm.prep_workers):
            items.extend(part)
            bar.update(len(part))
    return items


def may_share_prefix(lm: Any, groups: Sequence[dict[str, Any]]) -> bool:
    """Whether the shared-audio-prefix path can apply (it needs every doc prepared before scoring):
    ``share_prefix=true``, or ``auto`` and two docs have the same audio and the same rendered text up to
    their last audio placeholder (cheap: no audio decoded, the template rendered once per pattern).  The
    final grouping is still made from the token ids (``audio_tasks.batching.shared_prefix_groups``)."""
    if lm.share_prefix != "auto":
        return lm.share_prefix == "true"
    prep: Preparer = lm._preparer
    try:
        marker = lm.tokenizer.convert_ids_to_tokens(lm.engine.audio_token_id)
    except Exception:  # noqa: BLE001 - no audio token: no audio prefix
        return False
    seen: set[Any] = set()
    for g in groups:
        aux = g["aux"]
        audio = (aux or {}).get("audio") or []
        n = len(audio) if isinstance(audio, (list, tuple)) else 1
        if n == 0:
            continue
        text = prep.render(g["context"], g["req"].doc, n)
        cut = text.rfind(marker)
        if cut < 0:
            continue
        key = (g["req"].task_name, audio_identity(aux), text[:cut])  # auto shares within a task only
        if key in seen:
            return True
        seen.add(key)
    return False


def check_audio_files(groups: Sequence[dict[str, Any]]) -> None:
    """Every audio file path named by a doc exists (cheap: one stat each).  Decoding errors of files
    that exist still surface when their chunk is prepared."""
    from audio_tasks.audio import AudioError

    for g in groups:
        items = (g["aux"] or {}).get("audio") or []
        for it in items if isinstance(items, (list, tuple)) else [items]:
            path = it if isinstance(it, str) else (it.get("path") if isinstance(it, dict) and it.get("array") is None
                                                    and not it.get("bytes") else None)
            if isinstance(path, str) and not os.path.isfile(path):
                req = g["req"]
                raise AudioError(f"unreadable audio (task {req.task_name}, doc {req.doc_id}): {path}: no such file")


def stream_loglikelihood(lm: Any, groups: Sequence[dict[str, Any]], emit: Callable[[list, list], None]) -> None:
    """Score ``groups`` task by task while ``lm.prep_workers`` threads prepare the chunks ahead.

    Chunks (``max(CHUNK_DOCS, batch size)`` docs) are prepared as a unit; ``WINDOW_CHUNKS`` consecutive
    chunks of a task are sorted by length and cut into batches (``AudioLALM.score_batches``).  Both
    depend only on the requests and the batch size, never on the worker count or timing."""
    from tqdm import tqdm

    if not groups:
        return
    check_audio_files(groups)  # a missing file fails now, before any forward pass
    prep: Preparer = lm._preparer
    size = _chunk_size(lm)
    chunks = stream_chunks(groups, size)
    # windows: consecutive chunks of one task, at most WINDOW_CHUNKS
    windows: list[tuple[str, int]] = []  # (task, number of chunks)
    for ch in chunks:
        task = ch[0]["req"].task_name
        if windows and windows[-1][0] == task and windows[-1][1] < WINDOW_CHUNKS:
            windows[-1] = (task, windows[-1][1] + 1)
        else:
            windows.append((task, 1))
    workers = lm.prep_workers
    ready = ordered_prefetch([(lambda c=c: prep.items(c)) for c in chunks], workers,
                             depth=max(2 * workers, WINDOW_CHUNKS + workers))
    tasks = list(OrderedDict.fromkeys(t for t, _ in windows))
    desc = f"audio_lalm {tasks[0]}" if len(tasks) == 1 else f"audio_lalm ({len(tasks)} tasks)"
    pbar = tqdm(total=len(groups), desc=desc, disable=(lm.rank != 0))
    t0 = time.perf_counter()
    try:
        for task, n in windows:
            items = [it for _ in range(n) for it in next(ready)]
            emit(items, lm.score_batches(items, lm.intervention_for(task, items[0].meta["doc"]), desc=task,
                                          pbar=pbar))
    finally:
        pbar.close()
        ready.close()
    log.info("audio_lalm: %d docs prepared and scored in %.2f s (%d preparation workers)", len(groups),
             time.perf_counter() - t0, workers)


def generate_requests(lm: Any, requests: Sequence[Any], *, disable_tqdm: bool = False) -> list[str]:
    """``generate_until`` for ``lm``: per task, prompts sorted by token length (longest first, lm-eval's
    ``Collator``) and run in batches of ``batch_size`` through :func:`interventions.generation.greedy_generate`;
    results in request order."""
    from lm_eval.models.utils import Collator
    from tqdm import tqdm

    from interventions.generation import greedy_generate

    prep: Preparer = lm._preparer
    cache_args = lm.cache_args(requests)  # as lm-eval's --use_cache looked them up (before rendered_prompt)
    rows = []  # (request index, prompt, clips, until, max_new)
    for i, req in enumerate(requests):
        context, gen_kwargs = req.args[0], dict(req.args[1] or {})
        aux = req.args[2] if len(req.args) > 2 else None
        (prompt, clips), = prep.prompts_only([{"req": req, "aux": aux, "context": context}])
        until = gen_kwargs.get("until") or []
        if isinstance(until, str):
            until = [until]
        rows.append((i, prompt, clips, list(until), int(gen_kwargs.get("max_gen_toks", lm.max_gen_toks))))
    toks: list[Any] = []
    size = _chunk_size(lm)
    for s in range(0, len(rows), size):
        part = rows[s: s + size]
        toks.extend(prep.tokenize_many([r[1] for r in part], [r[2] for r in part]))
    by_task: OrderedDict[str, list[int]] = OrderedDict()
    for k, req in enumerate(requests):
        by_task.setdefault(req.task_name, []).append(k)
    out: list[str] = [""] * len(requests)
    bs = max(1, int(lm.batch_size_per_gpu))
    with tqdm(total=len(requests), desc="audio_lalm generate", disable=disable_tqdm or lm.rank != 0) as bar:
        for task, idxs in by_task.items():
            iv = lm.intervention_for(task, requests[idxs[0]].doc)
            # longest first (ties in request order), in batches: lm-eval's Collator, as its hf model orders them
            for b in Collator(idxs, sort_fn=lambda k: -int(toks[k].input_ids.shape[0])).get_batched(n=bs):
                gens = greedy_generate(lm.engine, [toks[k] for k in b], max_new_tokens=[rows[k][4] for k in b],
                                       until=[rows[k][3] for k in b], intervention=iv)
                for k, g in zip(b, gens):
                    out[k] = g.text
                    if cache_args is not None:
                        lm.cache_hook.add_partial("generate_until", cache_args[k], g.text)
                bar.update(len(b))
    return out
