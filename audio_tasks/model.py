"""``audio_lalm``: likelihood scoring of audio prompts inside lm-eval, for any supported LALM.

    lm_eval --model audio_lalm --model_args pretrained=Qwen/Qwen2-Audio-7B-Instruct,steer=layer_guided \
        --tasks sakura_gender

This is the one path that loads a model (analyses instantiate this class too).  Per-architecture
details come from :mod:`interventions.specs`; interventions from :mod:`interventions.steering`.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from tqdm import tqdm

from audio_tasks.model_args import MODEL_ARGS
from interventions.config import SteerConfig
from interventions.loader import load_model as _load_model
from interventions.loader import reference_model_dir

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["AudioLALM", "MODEL_ARGS", "REFERENCE_MODEL_DIR"]

REFERENCE_MODEL_DIR = reference_model_dir()



def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _device_asked(kwargs: dict[str, Any]) -> bool:
    """Whether the user asked for the device (model_args or --device) rather than lm-eval's CLI default."""
    return not kwargs.get("_device_is_default", False)


def _cli_device_is_default(args: dict[str, Any], extra: dict[str, Any]) -> bool:
    import sys

    return "device" not in args and "device" in extra and not any(a == "--device" or a.startswith("--device=")
                                                                   for a in sys.argv)


def load_model(pretrained: str, **kwargs: Any):
    """(model, processor, spec) through the one loading path (:func:`interventions.loader.load_model`), with the
    offline fixture processors registered when a tiny checkpoint names them."""
    from audio_tasks.processors import import_fixtures

    import_fixtures(pretrained)
    return _load_model(pretrained, **kwargs)


def _audio_identity(aux: dict[str, Any] | None) -> str:
    from audio_tasks.requests import audio_identity

    return audio_identity(aux)


class AudioLALM(LM):
    """lm-eval model for large audio-language models, scored by likelihood."""

    MULTIMODAL = True

    def __init__(self, pretrained: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        device_asked = _device_asked(kwargs)
        kwargs.pop("_device_is_default", None)
        unknown = sorted(set(kwargs) - set(MODEL_ARGS))
        if unknown:
            raise ValueError(f"audio_lalm: unknown model argument(s) {unknown}; valid: {', '.join(MODEL_ARGS)}")
        # Validate intervention arguments before anything expensive.
        self.steer_cfg = SteerConfig.from_kwargs(kwargs)
        import torch

        from interventions.loader import load_engine

        self.pretrained = str(pretrained) if pretrained else str(REFERENCE_MODEL_DIR)
        if not pretrained:
            if not (REFERENCE_MODEL_DIR / "config.json").exists():
                raise FileNotFoundError(f"no pretrained given and the embedded reference model is missing at "
                                        f"{REFERENCE_MODEL_DIR}")
            log.info("audio_lalm: no pretrained given, using the embedded reference model %s", REFERENCE_MODEL_DIR)
        from audio_tasks.reference import model_name

        self.model_name = model_name(pretrained)  # "audio-lalm-reference" for the embedded model
        self.revision = kwargs.get("revision")
        self.trust_remote_code = _bool(kwargs.get("trust_remote_code", False))

        from accelerate import Accelerator, PartialState

        state = PartialState()
        self._rank, self._world_size = state.process_index, state.num_processes
        self.accelerator = Accelerator() if self._world_size > 1 else None
        device = kwargs.get("device")
        if self._world_size > 1:
            device = str(state.device)
        elif not device:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes device=cuda by default; like its `hf` model, fall back to the CPU.
            # INFO: the user did not necessarily ask for a device (lm-eval's default); see _device_asked.
            (log.warning if device_asked else log.info)(
                "audio_lalm: device=%s requested but CUDA is not available; using cpu", device)
            device = "cpu"
        self._device = str(device)
        from interventions.config import _int

        def _pos_int(name: str, default: Any) -> int:
            v = _int(default if kwargs.get(name) in (None, "") else kwargs[name], name)
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
            return v

        bs = kwargs.get("batch_size", 1)
        self.auto_batch = str(bs).startswith("auto")
        self.max_batch_size = _pos_int("max_batch_size", 64)
        self.batch_size_per_gpu = self.max_batch_size if self.auto_batch else _pos_int("batch_size", 1)
        self.max_gen_toks = _pos_int("max_gen_toks", 256)
        if kwargs.get("max_length"):
            _pos_int("max_length", None)
        self.share_prefix = str(kwargs.get("share_prefix", "auto")).strip().lower()
        if self.share_prefix not in ("auto", "true", "false"):
            raise ValueError(f"share_prefix={kwargs['share_prefix']!r}; valid: auto, true, false")
        from audio_tasks.labels import COLLISION_POLICIES, FIRST_TOKEN_MODES
        from audio_tasks.pipeline import parse_workers

        self.prep_workers = parse_workers(kwargs.get("prep_workers"))  # background preparation threads

        self.first_token = str(kwargs.get("first_token", "in_context")).strip().lower()
        if self.first_token not in FIRST_TOKEN_MODES:
            raise ValueError(f"first_token={kwargs['first_token']!r}; valid: {', '.join(FIRST_TOKEN_MODES)}")
        self.first_token_collisions = str(kwargs.get("first_token_collisions", "auto")).strip().lower()
        if self.first_token_collisions not in COLLISION_POLICIES:
            raise ValueError(f"first_token_collisions={kwargs['first_token_collisions']!r}; valid: "
                             f"{', '.join(COLLISION_POLICIES)}")

        from audio_tasks.processors import import_fixtures

        import_fixtures(self.pretrained)  # offline tiny processors, when a tiny checkpoint names them
        self.engine = load_engine(
            self.pretrained, revision=self.revision, dtype=kwargs.get("dtype", "auto"), device=self._device,
            attn_implementation=kwargs.get("attn_implementation"), trust_remote_code=self.trust_remote_code,
            parallelize=_bool(kwargs.get("parallelize", False)))
        self.model, self.processor, self.spec = self.engine.model, self.engine.processor, self.engine.spec
        self.tokenizer = self.engine.tokenizer
        L, H = self.spec.num_layers(self.model), self.spec.num_heads(self.model)
        self.steer_cfg.validate_against(L, H)
        self._interventions: dict[str, Any] = {}
        self._building_for_analysis = False  # set by audio_tasks.items.task_items (first-token analyses)
        self._external_chat = False
        self._audio_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._max_length = int(kwargs["max_length"]) if kwargs.get("max_length") else None
        self._records: dict[str, dict[str, Any]] = {}  # per task: what was applied (audio_tasks.record)
        self._evaluated: dict[str, dict[str, int]] = {}  # per task: docs scored, by split membership
        self._overlap_warned: set[str] = set()
        static = None
        from audio_tasks.pipeline import Preparer

        self._preparer = Preparer(self)
        if self.steer_cfg.steer != "none":
            from audio_tasks.calibration import resolve_static

            static = resolve_static(self)  # explicit args or calibration=DIR: checked now, before any forward
            if static is not None:
                self._interventions["*"] = static
        from audio_tasks.data.registry import set_auto_calibration

        # lm-eval loads the tasks after creating the model: with automatic calibration their default split
        # is the evaluation split (calibration uses the calibration split), else the full set.
        set_auto_calibration(self.steer_cfg.steer != "none" and static is None)

    # ---- lm-eval plumbing -------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def device(self) -> str:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return str(self.pretrained).replace("/", "__")

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        cfg = self.spec.text_cfg(self.model)
        return int(getattr(cfg, "max_position_embeddings", 2048))

    def get_model_info(self) -> dict[str, Any]:
        """Goes into lm-eval's results JSON (``config``): the model and, per task, the intervention applied
        (kind, strength, layers/weights, heads, artifact, calibration split and sweep) and the docs scored."""
        info: dict[str, Any] = {"pretrained": self.pretrained, "revision": self.revision, "steer": self.steer_cfg.steer}
        tasks = sorted((set(self._records) - {"*"}) | set(self._evaluated))
        per_task = {}
        for t in tasks:
            rec = {k: v for k, v in (self._records.get(t) or self._records.get("*") or {"kind": self.steer_cfg.steer}
                                     ).items() if not k.startswith("_")}
            ev = self._evaluated.get(t, {})
            splits = sorted(k for k in ev if ev[k])
            rec["evaluation"] = {"split": splits[0] if len(splits) == 1 else ("all" if splits else None),
                                 "n_docs": sum(ev.values()), "docs_by_split": dict(ev)}
            per_task[t] = rec
        info["audio_lalm"] = {"interventions": per_task}
        return info

    def _note_scored(self, sub, scores) -> None:
        """After scoring one task's items: refuse non-finite scores, count docs by split, check that an
        automatically calibrated intervention never scores a calibration doc."""
        from audio_tasks.record import check_finite

        if not sub:
            return
        task = sub[0].meta["task"]
        rec = self._records.get(task) or self._records.get("*") or {}
        settings = json.dumps({k: v for k, v in (rec or {}).items() if k in (
            "kind", "strength", "layers", "weights", "heads", "source_layer", "gap", "control", "seed", "artifact")}
                              or {"steer": self.steer_cfg.steer}, default=str)
        check_finite(task, sub, scores, settings)
        ev = self._evaluated.setdefault(task, {})
        cal_ids = set((rec or {}).get("_calibration_clip_ids") or ())
        overlap = []
        for it in sub:
            doc = it.meta.get("doc")
            split = doc.get("split") if isinstance(doc, dict) else None
            ev[str(split or "unknown")] = ev.get(str(split or "unknown"), 0) + 1
            did = doc.get("doc_id") if isinstance(doc, dict) else None
            if cal_ids and did is not None and str(did) in cal_ids:
                overlap.append(str(did))
        if overlap and rec.get("source") == "automatic calibration":
            raise ValueError(f"audio_lalm: task {task!r} scores doc {overlap[0]!r}, which the automatic calibration "
                             "of this run used; evaluate the evaluation split (the default with automatic "
                             "calibration; drop --metadata split=...), or pass calibration=DIR")
        if overlap and task not in self._overlap_warned:
            self._overlap_warned.add(task)
            log.warning("audio_lalm: task %s scores %d doc(s) (e.g. %s) that calibrated the artifact %s; for held-out "
                        "numbers evaluate --metadata '{\"split\": \"evaluation\"}'", task, len(overlap), overlap[0],
                        rec.get("artifact"))

    @property
    def identity(self) -> dict[str, Any]:
        """What makes the loaded model this model (architecture, sizes, vocabulary, revision, weights, dtype);
        recorded in calibration artifacts and the --use_cache guard, see interventions.fingerprint."""
        if getattr(self, "_identity", None) is None:
            from interventions.fingerprint import model_fingerprint

            self._identity = model_fingerprint(self.model, self.spec, self.tokenizer, revision=self.revision)
        return self._identity

    def model_fingerprint(self) -> dict[str, Any]:
        return {"pretrained": self.pretrained, "revision": self.revision, "identity": self.identity,
                **self.steer_cfg.fingerprint()}

    def set_cache_hook(self, cache_hook) -> None:
        """Guard lm-eval's --use_cache: its key ignores model_args, so runs with other model or
        intervention arguments would silently reuse each other's scores."""
        super().set_cache_hook(cache_hook)
        db = getattr(cache_hook, "dbdict", None)
        if db is None:
            return
        key = "__audio_lalm_model_fingerprint__"
        mine = json.dumps(self.model_fingerprint(), sort_keys=True, default=str)
        theirs = db.get(key)
        if theirs is None:
            db[key] = mine
        elif theirs != mine:
            raise ValueError(
                "audio_lalm: the --use_cache database was written by a run with different model arguments "
                f"({theirs}) than this one ({mine}); lm-eval's cache key ignores model_args, so reusing it "
                "would mix up scores. Use a separate --use_cache path per model/intervention configuration.")

    def apply_chat_template(self, chat_history: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """Render with the model's own chat template; audio goes first in the first user turn."""
        self._external_chat = True
        msgs, placed = [], False
        for m in chat_history:
            content: Any = m["content"]
            if m["role"] == "user" and not placed:
                content = [{"type": "audio", "audio_url": "audio_0"}] + ([{"type": "text", "text": content}]
                                                                           if content else [])
                placed = True
            msgs.append({"role": m["role"], "content": content})
        cont_final = not add_generation_prompt and msgs and msgs[-1]["role"] == "assistant"
        if cont_final:
            prefix = msgs.pop()["content"]
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) + prefix
        return self.processor.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=False)

    # ---- request parsing --------------------------------------------------------------------
    def _clips(self, aux: dict[str, Any] | None, where: str) -> list[np.ndarray]:
        from audio_tasks.requests import load_clips

        return load_clips(self.engine, aux, where, self._audio_cache)

    def render(self, context: str, doc: Any, n_audio: int) -> str:
        """The exact prompt string fed to the processor."""
        from audio_tasks.requests import render_prompt

        return render_prompt(self.engine, context, doc, n_audio, external_chat=self._external_chat)

    def _split_continuation(self, prompt: str, continuation: str) -> list[int]:
        from audio_tasks.requests import split_continuation

        return split_continuation(self.engine, prompt, continuation)

    def _cache_args(self, requests: list[Instance]) -> list[tuple] | None:
        """Each request's args as lm-eval's --use_cache looked them up (before ``rendered_prompt`` is added to
        the aux dict), with the audio: results are stored under exactly that key, so an identical rerun is
        served from the cache and requests with other clips never share an entry."""
        if getattr(self.cache_hook, "dbdict", None) is None:
            return None
        import copy

        return [tuple(copy.deepcopy(a) if isinstance(a, dict) else a for a in r.args) for r in requests]

    def _build_items(self, requests: list[Instance]):
        """Scoring items for ``requests`` (all prepared now, by the background workers; see
        :mod:`audio_tasks.pipeline`, which builds them as ``audio_tasks.requests.build_items`` does)."""
        from audio_tasks.pipeline import group_requests, prepare_all

        return prepare_all(self, group_requests(requests))

    # ---- interventions ----------------------------------------------------------------------
    def intervention_for(self, task_name: str | None, doc: Any = None):
        """The task's intervention (auto-calibrated on first use with the task metadata stamped on ``doc``)."""
        if self.steer_cfg.steer == "none":
            return None
        if "*" in self._interventions:
            if task_name not in self._records:
                from audio_tasks.record import log_record

                self._records[task_name] = self._records.get("*", {})
                log_record(str(task_name), self._records[task_name])
            return self._interventions["*"]
        if task_name not in self._interventions:
            from audio_tasks.calibration import auto_calibrate
            from audio_tasks.data.registry import doc_metadata
            from audio_tasks.record import log_record

            # also fills self._records[task]
            self._interventions[task_name] = auto_calibrate(self, task_name, doc_metadata(doc))
            log_record(str(task_name), self._records.get(task_name, {}))
        return self._interventions[task_name]

    # ---- scoring ----------------------------------------------------------------------------
    def _score_batches(self, items, intervention, desc: str, *, share_prefix: bool = False, pbar=None):
        import torch

        from interventions.scoring import score_items

        order = sorted(range(len(items)), key=lambda i: -int(items[i].tok.input_ids.shape[0]))
        results: dict[int, Any] = {}
        bs = self.batch_size_per_gpu
        pos = 0
        own = pbar is None
        if own:
            pbar = tqdm(total=len(items), desc=desc, disable=(self.rank != 0))
        while pos < len(order):
            chunk = order[pos: pos + bs]
            try:
                scores = score_items(self.engine, [items[i] for i in chunk], intervention, share_prefix=share_prefix)
            except torch.OutOfMemoryError:
                if bs == 1:
                    raise
                self.engine.drop_prefix_cache()  # recomputed on demand; frees device memory now
                torch.cuda.empty_cache()
                bs = max(1, bs // 2)
                log.warning("audio_lalm: out of memory, batch size lowered to %d", bs)
                continue
            for i, s in zip(chunk, scores):
                results[i] = s
            pos += len(chunk)
            pbar.update(len(chunk))
        if own:
            pbar.close()
        if self.auto_batch:
            self.batch_size_per_gpu = bs
        return [results[i] for i in range(len(items))]

    def _shared_prefix_groups(self, items) -> list[list[int]] | None:
        """Items grouped by audio prefix (same clip, same text before it) when sharing pays off:
        ``share_prefix=true``, or ``auto`` and some prefix occurs more than once (several prompt
        formats or tasks over the same clips).  None: score task by task as usual."""
        if self.share_prefix == "false":
            return None
        groups: OrderedDict[Any, list[int]] = OrderedDict()
        for i, it in enumerate(items):
            key = self.engine.prefix_key(it.tok)
            groups.setdefault(key if key is not None else ("own", i), []).append(i)
        if self.share_prefix == "auto" and all(len(g) == 1 for g in groups.values()):
            return None
        return sorted(groups.values(), key=lambda g: -max(int(items[i].tok.input_ids.shape[0]) for i in g))

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from audio_tasks.pipeline import group_requests, may_share_prefix, prepare_all, stream_loglikelihood

        cache_args = self._cache_args(requests)
        out: list[Any] = [None] * len(requests)

        def emit(sub, scores):
            self._note_scored(sub, scores)
            for it, s in zip(sub, scores):
                for r, res in zip(it.meta["reqs"], s.as_results()):
                    out[r] = res
                    if cache_args is not None:
                        self.cache_hook.add_partial("loglikelihood", cache_args[r], res)

        docs = group_requests(requests)
        if not may_share_prefix(self, docs):
            # Streaming: background workers prepare the next chunks while the model scores.
            stream_loglikelihood(self, docs, emit)
            return out
        items = prepare_all(self, docs)
        by_task: OrderedDict[str, list[int]] = OrderedDict()
        for i, it in enumerate(items):
            by_task.setdefault(it.meta["task"], []).append(i)
        task_doc = {task: items[idxs[0]].meta["doc"] for task, idxs in by_task.items()}
        if self.share_prefix == "auto":
            # Each task on its own: a task's scores must not depend on which other tasks ran (bit-identical
            # alone and beside others); prefixes repeated within a task are still shared.
            for task, idxs in by_task.items():
                sub = [items[i] for i in idxs]
                groups = self._shared_prefix_groups(sub)
                if groups is None:
                    emit(sub, self._score_batches(sub, self.intervention_for(task, task_doc[task]),
                                                  desc=f"audio_lalm {task}"))
                else:
                    self._score_shared(sub, groups, {task: list(range(len(sub)))}, emit)
            return out
        groups = self._shared_prefix_groups(items)
        if groups is None:
            for task, idxs in by_task.items():
                sub = [items[i] for i in idxs]
                emit(sub, self._score_batches(sub, self.intervention_for(task, task_doc[task]),
                                              desc=f"audio_lalm {task}"))
            return out
        self._score_shared(items, groups, by_task, emit)
        return out

    def _score_shared(self, items, groups, by_task, emit) -> None:
        # Shared audio prefixes: walk the clips in chunks of one batch; within a chunk every task
        # (prompt format, intervention) is scored against the prefix KV computed once per clip.
        ivs = {task: self.intervention_for(task, items[idxs[0]].meta["doc"]) for task, idxs in by_task.items()}
        pbar = tqdm(total=len(items), desc="audio_lalm (shared audio prefixes)", disable=(self.rank != 0))
        pos = 0
        while pos < len(groups):
            chunk = groups[pos: pos + self.batch_size_per_gpu]
            self.engine.reserve_prefix_cache(2 * len(chunk))
            members = {i for g in chunk for i in g}
            for task, idxs in by_task.items():
                sub = [items[i] for i in idxs if i in members]
                if sub:
                    emit(sub, self._score_batches(sub, ivs[task], desc=task, share_prefix=True, pbar=pbar))
            pos += len(chunk)
        pbar.close()

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        import torch
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        from interventions.arch_extras import decoder_token_kwargs

        out = []
        prefix = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.pad_token_id
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="audio_lalm rolling"):
            text = req.args[0]
            ids = self.engine.encode_text(text)
            total = 0.0
            for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=ids, prefix_token=prefix, max_seq_len=self.max_length, context_len=1)):
                seq = torch.tensor([ctx + pred], device=self.engine.device)
                emb = self.spec.embed_ids(self.model, seq)
                with torch.no_grad():
                    extra = decoder_token_kwargs(self.spec, self.model, seq)  # e.g. Gemma 3n's per-layer inputs
                    dec = self.spec.decoder_module(self.model)
                    h = dec(inputs_embeds=emb, return_dict=True, **extra).last_hidden_state
                    lp = torch.log_softmax(self.engine.unembed(h[0, -len(pred) - 1:-1] if len(ctx) else h[0]), -1)
                tgt = torch.tensor(pred, device=lp.device)
                total += float(lp[torch.arange(len(pred)), tgt].sum())
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return out

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation with audio, batched (left padding, KV cache, incremental decoding; see
        :mod:`interventions.generation`); stops at any ``until`` string, EOS or ``max_gen_toks``."""
        from audio_tasks.pipeline import generate_requests

        return generate_requests(self, requests, disable_tqdm=disable_tqdm)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "AudioLALM":
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string) if isinstance(arg_string, str) else dict(arg_string or {})
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if _cli_device_is_default(args, extra):
            extra["_device_is_default"] = True
        return cls(**{**extra, **args})  # explicit model_args win over lm-eval's CLI defaults

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "AudioLALM":
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if _cli_device_is_default(dict(arg_dict), extra):
            extra["_device_is_default"] = True
        return cls(**{**extra, **dict(arg_dict)})
