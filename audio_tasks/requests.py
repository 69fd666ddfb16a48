"""lm-eval requests -> scoring items (:class:`interventions.scoring.MCItem`) over an engine.

The public conversion used by the lm-eval adapter (``AudioLALM.loglikelihood``) and by
``audio_tasks.items.task_items`` (calibration and analyses), so both score exactly the same prompts.
It needs an :class:`~interventions.engine.Engine` only (see ``interventions.load_engine``), no lm-eval model.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from interventions.byte_lru import ByteLRU
from interventions.engine import Engine, clip_key

__all__ = ["build_items", "group_requests", "finish_doc", "audio_identity", "load_clips", "render_prompt",
           "encode_pair", "split_continuation", "render_chat_history"]

MAX_CACHED_CLIP_BYTES = 1 << 30  # decoded clips kept by path: 1 GiB (about 4.7 h of 16-kHz float32 audio)


def audio_identity(aux: dict[str, Any] | None) -> str:
    """A key telling requests with the same audio apart from others (paths by name, arrays by content)."""

    def one(o: Any) -> str:
        if isinstance(o, str):
            return o
        if isinstance(o, dict) and o.get("array") is None:
            raw = np.frombuffer(o.get("bytes") or b"", dtype=np.uint8)
            return str(o.get("path")) + clip_key(raw)
        return clip_key(np.asarray(o["array"] if isinstance(o, dict) else o))

    items = (aux or {}).get("audio") or []
    return "|".join(one(o) for o in (items if isinstance(items, (list, tuple)) else [items]))


def load_clips(engine: Engine, aux: dict[str, Any] | None, where: str,
               cache: ByteLRU[np.ndarray] | None = None, *,
               warned: set[str] | None = None) -> list[np.ndarray]:
    """The request's audio clips at the engine's sampling rate, cut to its audio window.

    ``cache`` (optional, a :class:`~interventions.byte_lru.ByteLRU`, e.g. of :data:`MAX_CACHED_CLIP_BYTES`) keeps
    clips given by path; ``warned``
    (optional, owned by the caller) makes the long-clip and short-file warnings once-only
    (:func:`audio_tasks.audio.warn_if_truncated`)."""
    from audio_tasks.audio import load_audio, warn_if_truncated

    if not aux or not aux.get("audio"):
        return []
    items = aux["audio"]
    if not isinstance(items, (list, tuple)):
        items = [items]
    out = []
    window = engine.audio_window_s
    for it in items:
        key = it if isinstance(it, str) and cache is not None else None
        hit = cache.get(key) if key is not None and cache is not None else None
        if hit is not None:
            out.append(hit)
            continue
        wav = load_audio(it, engine.sampling_rate, where=where, warned=warned)
        warn_if_truncated(len(wav), engine.sampling_rate, window, where, warned=warned)
        if window:
            wav = wav[: int(window * engine.sampling_rate)]
        if key is not None and cache is not None:
            cache.put(key, wav)
        out.append(wav)
    return out


def render_prompt(engine: Engine, context: str, doc: Any, n_audio: int, *, external_chat: bool = False) -> str:
    """The exact prompt string fed to the processor (the model's chat template unless lm-eval rendered it)."""
    if n_audio == 0 or external_chat:
        return context
    if isinstance(doc, dict) and "user_prompt" in doc and "assistant_prefix" in doc:
        return engine.render_chat(doc["user_prompt"], assistant_prefix=doc["assistant_prefix"], n_audio=n_audio)
    return engine.render_chat(context, n_audio=n_audio)


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(context ids, continuation ids)`` as lm-eval's ``TemplateLM._encode_pair`` splits a causal model's pair:
    trailing context spaces move to the continuation and the boundary is taken from the tokenization of the
    whole string.  One difference: where the context's ids are not a prefix of the whole string's (a token
    merged across the boundary) or nothing is left, the continuation is tokenized on its own."""
    n_sp = len(context) - len(context.rstrip())
    if n_sp:
        continuation = context[-n_sp:] + continuation
        context = context[:-n_sp]
    whole = encode(context + continuation)
    ctx = encode(context)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, encode(continuation)


def split_continuation(engine: Engine, prompt: str, continuation: str) -> list[int]:
    """Continuation tokens of ``prompt`` + ``continuation`` (:func:`encode_pair`)."""
    return encode_pair(engine.encode_text, prompt, continuation)[1]


def render_chat_history(processor: Any, chat_history: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """lm-eval's ``apply_chat_template`` hook: the chat rendered with the model's own template, the audio first
    in the first user turn; an unfinished last assistant turn is continued."""
    msgs, placed = [], False
    for m in chat_history:
        content: Any = m["content"]
        if m["role"] == "user" and not placed:
            content = [{"type": "audio", "audio_url": "audio_0"}] + ([{"type": "text", "text": content}]
                                                                       if content else [])
            placed = True
        msgs.append({"role": m["role"], "content": content})
    if not add_generation_prompt and msgs and msgs[-1]["role"] == "assistant":
        prefix = msgs.pop()["content"]
        return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) + prefix
    return processor.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=False)


def group_requests(requests: Sequence[Any]) -> list[dict[str, Any]]:
    """Requests -> docs (one per task, doc, context and audio), in order of first appearance.  Cheap: no audio
    is decoded (files are identified by name, in-memory arrays by content).  Each doc: ``reqs`` (request
    indices), ``conts`` (continuations), ``aux``, ``context``, ``req`` (its first request), ``requests``."""
    groups: OrderedDict[Any, dict[str, Any]] = OrderedDict()
    for idx, req in enumerate(requests):
        args = req.args
        context, continuation = args[0], args[1]
        aux = args[2] if len(args) > 2 else None
        key = (req.task_name, req.doc_id, context, audio_identity(aux))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"reqs": [], "conts": [], "aux": aux, "context": context, "req": req,
                               "requests": requests}
        g["reqs"].append(idx)
        g["conts"].append(continuation)
    return list(groups.values())


def finish_doc(g: dict[str, Any], prompt: str, cont_ids: Sequence[Sequence[int]], *, encode_text: Any,
               tokenizer: Any, first_token: str = "in_context", collisions: str = "auto",
               for_analysis: bool = False) -> list[int] | None:
    """What every doc gets once its prompt is rendered: the rendered prompt in the aux dict
    (``rendered_prompt``) and as the requests' context (``arg_0``, so --log_samples shows the text the model
    saw); the first-token ids (``first_token=audiolens``: each label tokenized alone, as the AudioLens release
    code does; else None = each continuation's first token); and the first-token collision check
    (:mod:`audio_tasks.labels`), before any feature extraction or forward pass."""
    from audio_tasks.first_tokens import audiolens_first_id, check_first_tokens, refuses

    req = g["req"]
    if g["aux"] is not None:
        g["aux"]["rendered_prompt"] = prompt  # shows in --log_samples 'arguments'
    if prompt != g["context"]:  # --log_samples' context (arg_0) = the text the model saw
        for r in g["reqs"]:
            g["requests"][r].arguments = (prompt, *g["requests"][r].args[1:])
    first_ids = None
    if first_token == "audiolens":  # AudioLens release code: label alone, no leading space
        first_ids = [audiolens_first_id(encode_text, c) for c in g["conts"]]
    if refuses(collisions, req.task_name, for_analysis):
        check_first_tokens(g["conts"], first_ids or [c[0] for c in cont_ids if c], tokenizer,
                           f"task {req.task_name}, doc {req.doc_id}")
    return first_ids


def build_items(engine: Engine, requests: Sequence[Any], *, clip_cache: ByteLRU[np.ndarray] | None = None,
                external_chat: bool = False, first_token: str = "in_context", collisions: str = "auto",
                for_analysis: bool = False, warned: set[str] | None = None) -> list[Any]:
    """Group ``loglikelihood`` requests (lm-eval ``Instance``s) by (task, doc, context, audio) into MCItems.

    ``item.meta``: ``reqs`` (request indices, one per continuation), task, doc_id, desc, doc, prompt.
    Records the rendered prompt in each request's aux dict (``rendered_prompt``, shown in --log_samples) and
    makes it the request's context (``arg_0``), so a reader of the samples sees the text the model saw.
    ``first_token``: ``in_context`` (default) or ``audiolens`` (the label tokenized alone, as the AudioLens
    release code does); ``collisions`` / ``for_analysis``: when choices sharing a first token are refused
    (:mod:`audio_tasks.labels`), before any feature extraction or forward pass.  ``warned``: see
    :func:`load_clips` (a set of its own per call when not given)."""
    from interventions.scoring import MCItem

    warned = set() if warned is None else warned
    items = []
    for g in group_requests(requests):
        req = g["req"]
        where = f"task {req.task_name}, doc {req.doc_id}"
        clips = load_clips(engine, g["aux"], where, clip_cache, warned=warned)
        prompt = render_prompt(engine, g["context"], req.doc, len(clips), external_chat=external_chat)
        # Split at the text level, before placeholders are expanded.
        cont_ids = [split_continuation(engine, prompt, c) for c in g["conts"]]
        first_ids = finish_doc(g, prompt, cont_ids, encode_text=engine.encode_text, tokenizer=engine.tokenizer,
                               first_token=first_token, collisions=collisions, for_analysis=for_analysis)
        base = prompt.rstrip()  # trailing spaces went to the continuations
        tok = engine.tokenize(base, clips)
        items.append(MCItem(tok, cont_ids, {"reqs": g["reqs"], "task": req.task_name, "doc_id": req.doc_id,
                                            "desc": where, "doc": req.doc, "prompt": base}, first_ids))
    return items
