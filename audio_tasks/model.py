"""``audio_lalm``: likelihood scoring of audio prompts inside lm-eval, for any supported LALM.

    lm_eval --model audio_lalm --model_args pretrained=Qwen/Qwen2-Audio-7B-Instruct,steer=layer_guided \
        --tasks sakura_gender

This is the one path that loads a model (analyses instantiate this class too).  Per-architecture
details come from :mod:`interventions.specs`; interventions from :mod:`interventions.steering`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from tqdm import tqdm

from interventions.config import STEER_KEYS, SteerConfig

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["AudioLALM", "MODEL_ARGS", "REFERENCE_MODEL_DIR"]

REFERENCE_MODEL_DIR = Path(__file__).parent / "reference" / "model"

MODEL_ARGS = ("pretrained", "revision", "dtype", "device", "batch_size", "max_batch_size", "attn_implementation",
              "trust_remote_code", "parallelize", "max_gen_toks", "max_length", "share_prefix",
              "prep_workers") + STEER_KEYS


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _dtype(name: Any, device: str):
    import torch

    if name in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(name, torch.dtype):
        return name
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if str(name) not in table:
        raise ValueError(f"dtype={name!r}; valid: auto, {', '.join(table)}")
    return table[str(name)]


def load_model(pretrained: str, *, revision: str | None = None, dtype: Any = "auto", device: str = "cpu",
               attn_implementation: str | None = None, trust_remote_code: bool = False, parallelize: bool = False):
    """Load (model, processor, spec) for any architecture with a spec: the one loading path."""
    import transformers
    from transformers import AutoConfig, AutoProcessor

    from interventions.specs import spec_for_config

    config = AutoConfig.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    spec = spec_for_config(config)
    import importlib

    for mod in spec.processor_imports:  # offline processor classes a checkpoint may name (data in the spec)
        importlib.import_module(mod)
    cls = getattr(transformers, spec.model_class)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code,
                              "dtype": _dtype(dtype, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = (json.loads(attn_implementation) if str(attn_implementation).startswith("{")
                                         else {spec.text_config: attn_implementation})
    if parallelize:
        kwargs["device_map"] = "auto"
    model = cls.from_pretrained(pretrained, **kwargs)
    if not parallelize:
        model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    tok = getattr(processor, "tokenizer", None)
    if tok is not None:
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    return model, processor, spec


def _audio_identity(aux: dict[str, Any] | None) -> str:
    """A key telling requests with the same audio apart from others (paths by name, arrays by content)."""

    def one(o: Any) -> str:
        if isinstance(o, str):
            return o
        if isinstance(o, dict) and o.get("array") is None:
            return str(o.get("path")) + hashlib.md5(o.get("bytes") or b"").hexdigest()
        arr = np.ascontiguousarray(o["array"] if isinstance(o, dict) else o, dtype=np.float32)
        return hashlib.md5(arr.tobytes()).hexdigest()

    items = (aux or {}).get("audio") or []
    return "|".join(one(o) for o in (items if isinstance(items, (list, tuple)) else [items]))


class AudioLALM(LM):
    """lm-eval model for large audio-language models, scored by likelihood."""

    MULTIMODAL = True

    def __init__(self, pretrained: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        unknown = sorted(set(kwargs) - set(MODEL_ARGS))
        if unknown:
            raise ValueError(f"audio_lalm: unknown model argument(s) {unknown}; valid: {', '.join(MODEL_ARGS)}")
        # Validate intervention arguments before anything expensive.
        self.steer_cfg = SteerConfig.from_kwargs(kwargs)
        import torch

        from interventions.engine import Engine

        self.pretrained = str(pretrained) if pretrained else str(REFERENCE_MODEL_DIR)
        if not pretrained:
            if not (REFERENCE_MODEL_DIR / "config.json").exists():
                raise FileNotFoundError(f"no pretrained given and the embedded reference model is missing at "
                                        f"{REFERENCE_MODEL_DIR}")
            log.info("audio_lalm: no pretrained given, using the embedded reference model %s", REFERENCE_MODEL_DIR)
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
            log.warning("audio_lalm: device=%s requested but CUDA is not available; using cpu", device)
            device = "cpu"
        self._device = str(device)
        bs = kwargs.get("batch_size", 1)
        self.auto_batch = str(bs).startswith("auto")
        self.max_batch_size = int(kwargs.get("max_batch_size") or 64)
        self.batch_size_per_gpu = self.max_batch_size if self.auto_batch else int(bs)
        self.max_gen_toks = int(kwargs.get("max_gen_toks", 256))
        self.share_prefix = str(kwargs.get("share_prefix", "auto")).strip().lower()
        if self.share_prefix not in ("auto", "true", "false"):
            raise ValueError(f"share_prefix={kwargs['share_prefix']!r}; valid: auto, true, false")
        from audio_tasks.pipeline import parse_workers

        self.prep_workers = parse_workers(kwargs.get("prep_workers"))  # background preparation threads

        self.model, self.processor, self.spec = load_model(
            self.pretrained, revision=self.revision, dtype=kwargs.get("dtype", "auto"), device=self._device,
            attn_implementation=kwargs.get("attn_implementation"), trust_remote_code=self.trust_remote_code,
            parallelize=_bool(kwargs.get("parallelize", False)))
        self.engine = Engine(self.model, self.processor, self.spec)
        self.tokenizer = self.engine.tokenizer
        L, H = self.spec.num_layers(self.model), self.spec.num_heads(self.model)
        self.steer_cfg.validate_against(L, H)
        self._interventions: dict[str, Any] = {}
        self._external_chat = False
        self._audio_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._max_length = int(kwargs["max_length"]) if kwargs.get("max_length") else None
        from audio_tasks.pipeline import Preparer

        self._preparer = Preparer(self)
        if self.steer_cfg.steer != "none":
            from audio_tasks.calibration import resolve_static

            static = resolve_static(self)  # explicit args or calibration=DIR: checked now, before any forward
            if static is not None:
                self._interventions["*"] = static

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

    def model_fingerprint(self) -> dict[str, Any]:
        return {"pretrained": self.pretrained, "revision": self.revision, **self.steer_cfg.fingerprint()}

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
        from audio_tasks.audio import load_audio, warn_if_truncated

        if not aux or not aux.get("audio"):
            return []
        items = aux["audio"]
        if not isinstance(items, (list, tuple)):
            items = [items]
        out = []
        window = self.engine.audio_window_s
        for it in items:
            key = it if isinstance(it, str) else None
            if key and key in self._audio_cache:
                out.append(self._audio_cache[key])
                continue
            wav = load_audio(it, self.engine.sampling_rate, where=where)
            warn_if_truncated(len(wav), self.engine.sampling_rate, window)
            if window:
                wav = wav[: int(window * self.engine.sampling_rate)]
            if key:
                self._audio_cache[key] = wav
                while len(self._audio_cache) > 2048:
                    self._audio_cache.popitem(last=False)
            out.append(wav)
        return out

    def render(self, context: str, doc: Any, n_audio: int) -> str:
        """The exact prompt string fed to the processor."""
        if n_audio == 0 or self._external_chat:
            return context
        if isinstance(doc, dict) and "user_prompt" in doc and "assistant_prefix" in doc:
            return self.engine.render_chat(doc["user_prompt"], assistant_prefix=doc["assistant_prefix"],
                                           n_audio=n_audio)
        return self.engine.render_chat(context, n_audio=n_audio)

    def _split_continuation(self, prompt: str, continuation: str) -> list[int]:
        """Continuation tokens as lm-eval's hf model splits them (trailing context spaces move
        to the continuation; the boundary is taken from the tokenization of the whole string)."""
        n_sp = len(prompt) - len(prompt.rstrip())
        if n_sp:
            continuation = prompt[-n_sp:] + continuation
            prompt = prompt[:-n_sp]
        whole = self.engine.encode_text(prompt + continuation)
        ctx = self.engine.encode_text(prompt)
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            return whole[len(ctx):]
        return self.engine.encode_text(continuation)

    def _build_items(self, requests: list[Instance]):
        """Scoring items for ``requests`` (all prepared now; see :mod:`audio_tasks.pipeline`)."""
        from audio_tasks.pipeline import group_requests, prepare_all

        return prepare_all(self, group_requests(requests))

    # ---- interventions ----------------------------------------------------------------------
    def intervention_for(self, task_name: str | None):
        if self.steer_cfg.steer == "none":
            return None
        if "*" in self._interventions:
            return self._interventions["*"]
        if task_name not in self._interventions:
            from audio_tasks.calibration import auto_calibrate

            self._interventions[task_name] = auto_calibrate(self, task_name)
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

        out: list[Any] = [None] * len(requests)

        def emit(sub, scores):
            for it, s in zip(sub, scores):
                for r, res in zip(it.meta["reqs"], s.as_results()):
                    out[r] = res
                    self.cache_hook.add_partial("loglikelihood", requests[r].args[:2], res)

        docs = group_requests(requests)
        if not may_share_prefix(self, docs):
            # Streaming: background workers prepare the next chunks while the model scores.
            stream_loglikelihood(self, docs, emit)
            return out
        items = prepare_all(self, docs)
        by_task: OrderedDict[str, list[int]] = OrderedDict()
        for i, it in enumerate(items):
            by_task.setdefault(it.meta["task"], []).append(i)
        groups = self._shared_prefix_groups(items)
        if groups is None:
            for task, idxs in by_task.items():
                sub = [items[i] for i in idxs]
                emit(sub, self._score_batches(sub, self.intervention_for(task), desc=f"audio_lalm {task}"))
            return out
        # Shared audio prefixes: walk the clips in chunks of one batch; within a chunk every task
        # (prompt format, intervention) is scored against the prefix KV computed once per clip.
        ivs = {task: self.intervention_for(task) for task in by_task}
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
        return out

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        import torch
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        prefix = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.pad_token_id
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="audio_lalm rolling"):
            text = req.args[0]
            ids = self.engine.encode_text(text)
            total = 0.0
            for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=ids, prefix_token=prefix, max_seq_len=self.max_length, context_len=1)):
                seq = torch.tensor([ctx + pred], device=self.engine.device)
                emb = self.spec.embed_module(self.model)(seq)
                with torch.no_grad():
                    h = self.spec.decoder_module(self.model)(inputs_embeds=emb, return_dict=True).last_hidden_state
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
        return cls(**{**extra, **args})  # explicit model_args win over lm-eval's CLI defaults

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "AudioLALM":
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**extra, **dict(arg_dict)})
