"""``audio_lalm``: likelihood scoring of audio prompts inside lm-eval, for any supported LALM.

    lm_eval --model audio_lalm --model_args pretrained=Qwen/Qwen2-Audio-7B-Instruct,steer=layer_guided \
        --tasks sakura_gender

A thin lm-eval adapter (:class:`lm_eval.api.model.TemplateLM`) over the engine that
:func:`interventions.loader.load_engine` returns (analyses and benchmarks use that loader directly).  Each
concern lives in its own module: arguments (:mod:`audio_tasks.model_args`), rank and device
(:mod:`audio_tasks.placement`), requests -> scoring items (:mod:`audio_tasks.requests`, streamed by
:mod:`audio_tasks.pipeline`), batches and the out-of-memory back-off on lm-eval's ``Collator``
(:mod:`audio_tasks.batching`), interventions per task (:mod:`audio_tasks.calibration`), what a run applied
(:mod:`audio_tasks.record`) and the ``--use_cache`` guard (:mod:`audio_tasks.lm_cache`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, TemplateLM

from audio_tasks.model_args import MODEL_ARGS, merge_cli_args, parse_model_args
from audio_tasks.requests import MAX_CACHED_CLIP_BYTES
from interventions.byte_lru import ByteLRU
from interventions.loader import load_model as _load_model
from interventions.loader import reference_model_dir

log = logging.getLogger("lm_eval.audio_lalm")

__all__ = ["AudioLALM", "MODEL_ARGS", "REFERENCE_MODEL_DIR"]

REFERENCE_MODEL_DIR = reference_model_dir()


def load_model(pretrained: str, **kwargs: Any):
    """(model, processor, spec) through the one loading path (:func:`interventions.loader.load_model`), with the
    offline fixture processors registered when a tiny checkpoint names them."""
    from audio_tasks.processors import import_fixtures

    import_fixtures(pretrained)
    return _load_model(pretrained, **kwargs)


class AudioLALM(TemplateLM):
    """lm-eval model for large audio-language models, scored by likelihood."""

    MULTIMODAL = True

    def __init__(self, pretrained: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        opts = parse_model_args(kwargs)  # every argument checked before anything expensive
        self.steer_cfg, self.steer_args = opts.steer, opts.steer_args
        self.pretrained = str(pretrained) if pretrained else str(REFERENCE_MODEL_DIR)
        if not pretrained:
            if not (REFERENCE_MODEL_DIR / "config.json").exists():
                raise FileNotFoundError(f"no pretrained given and the embedded reference model is missing at "
                                        f"{REFERENCE_MODEL_DIR}")
            log.info("audio_lalm: no pretrained given, using the embedded reference model %s", REFERENCE_MODEL_DIR)
        from audio_tasks.batching import BatchSize
        from audio_tasks.calibration import TaskInterventions
        from audio_tasks.pipeline import Preparer
        from audio_tasks.placement import place
        from audio_tasks.processors import import_fixtures
        from audio_tasks.record import RunRecord
        from audio_tasks.reference import model_name
        from interventions.loader import load_engine

        self.model_name = model_name(pretrained)  # "audio-lalm-reference" for the embedded model
        self.revision, self.trust_remote_code = opts.revision, opts.trust_remote_code
        where = place(opts.device, asked=opts.device_asked)
        self._rank, self._world_size, self.accelerator, self._device = (where.rank, where.world_size,
                                                                        where.accelerator, where.device)
        self.auto_batch, self.max_batch_size = opts.auto_batch, opts.max_batch_size
        self.batch = BatchSize(opts.batch_size, auto=opts.auto_batch)
        self.max_gen_toks, self._max_length = opts.max_gen_toks, opts.max_length
        self.share_prefix, self.prep_workers = opts.share_prefix, opts.prep_workers
        self.first_token, self.first_token_collisions = opts.first_token, opts.first_token_collisions
        import_fixtures(self.pretrained)  # offline tiny processors, when a tiny checkpoint names them
        self.engine = load_engine(self.pretrained, revision=self.revision, device=self._device,
                                  trust_remote_code=self.trust_remote_code, **opts.load_kwargs)
        self.model, self.processor, self.spec = self.engine.model, self.engine.processor, self.engine.spec
        self.tokenizer = self.engine.tokenizer
        self.steer_cfg.validate_against(self.spec.num_layers(self.model), self.spec.num_heads(self.model))
        self.external_chat = False  # lm-eval rendered the chat (apply_chat_template was called)
        self.clip_cache: ByteLRU[np.ndarray] = ByteLRU(MAX_CACHED_CLIP_BYTES)  # decoded clips by path (LRU, bytes)
        self.run_record = RunRecord()
        self._preparer = Preparer(self)
        # explicit arguments or calibration=DIR: checked now, before any forward pass
        self.interventions = TaskInterventions(self, self.run_record.records)

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
        from lm_eval.utils import sanitize_model_name

        return sanitize_model_name(str(self.pretrained))

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        cfg = self.spec.text_cfg(self.model)
        return int(getattr(cfg, "max_position_embeddings", 2048))

    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else self.tokenizer.pad_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Text ids without special tokens (the engine's text tokenization)."""
        return self.engine.encode_text(string)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """TemplateLM's split of a (rendered prompt, continuation) pair (:func:`audio_tasks.requests.encode_pair`)."""
        from audio_tasks.requests import encode_pair

        return encode_pair(self.tok_encode, context, continuation)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """As lm-eval's plain ``LM`` (the processor renders the chat, see :meth:`apply_chat_template`)."""
        return LM.chat_template(self, chat_template)

    @property
    def batch_size_per_gpu(self) -> int:
        """The batch size (lowered for the rest of the run by an out-of-memory back-off with ``batch_size=auto``)."""
        return self.batch.value

    @batch_size_per_gpu.setter
    def batch_size_per_gpu(self, value: int) -> None:
        self.batch.value = int(value)

    @property
    def _interventions(self) -> dict[str, Any]:
        return self.interventions.objects

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

    def get_model_info(self) -> dict[str, Any]:
        """Goes into lm-eval's results JSON (``config``): the model and, per task, the intervention applied
        and the docs scored (:meth:`audio_tasks.record.RunRecord.model_info`)."""
        return {"pretrained": self.pretrained, "revision": self.revision, "steer": self.steer_cfg.steer,
                "audio_lalm": self.run_record.model_info(self.steer_cfg.steer)}

    def task_metadata(self) -> dict[str, Any]:
        """The model arguments that lm-eval merges into every task's metadata (``model_args | --metadata``);
        pass them when building a ``TaskManager`` yourself, so the loaders see automatic calibration."""
        return dict(self.steer_args)

    def set_cache_hook(self, cache_hook) -> None:
        """Guard lm-eval's --use_cache (:func:`audio_tasks.lm_cache.guard_cache_db`)."""
        from audio_tasks.lm_cache import guard_cache_db

        super().set_cache_hook(cache_hook)
        guard_cache_db(cache_hook, self.model_fingerprint())

    def cache_args(self, requests: list[Instance]) -> list[tuple] | None:
        """The keys lm-eval's --use_cache stores these requests' results under (:mod:`audio_tasks.lm_cache`)."""
        from audio_tasks.lm_cache import cache_args

        return cache_args(self.cache_hook, requests)

    def apply_chat_template(self, chat_history: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """Render with the model's own chat template; audio goes first in the first user turn."""
        from audio_tasks.requests import render_chat_history

        self.external_chat = True
        return render_chat_history(self.processor, chat_history, add_generation_prompt)

    def render(self, context: str, doc: Any, n_audio: int) -> str:
        """The exact prompt string fed to the processor."""
        from audio_tasks.requests import render_prompt

        return render_prompt(self.engine, context, doc, n_audio, external_chat=self.external_chat)

    def item_options(self) -> dict[str, Any]:
        """This model's keyword arguments to :func:`audio_tasks.requests.build_items` (first-token settings,
        clip cache, once-only audio warnings)."""
        return {"first_token": self.first_token, "collisions": self.first_token_collisions,
                "clip_cache": self.clip_cache, "warned": self._preparer.warned}

    def intervention_for(self, task_name: str | None, doc: Any = None):
        """The task's intervention (auto-calibrated on first use with the task metadata stamped on ``doc``)."""
        return self.interventions.for_task(task_name, doc)

    # ---- scoring ----------------------------------------------------------------------------
    def score_batches(self, items, intervention, desc: str, *, share_prefix: bool = False, pbar=None):
        """Scores of ``items`` in their order, in length-sorted batches (:mod:`audio_tasks.batching`)."""
        from audio_tasks.batching import score_in_batches

        return score_in_batches(self.engine, items, intervention, self.batch, share_prefix=share_prefix, pbar=pbar,
                                desc=desc, disable=self.rank != 0)

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """TemplateLM's ``loglikelihood`` for requests with audio: docs' prompts are rendered with their audio and
        split from the continuations (:meth:`_encode_pair`), then scored (:meth:`_loglikelihood_tokens`);
        preparation streams on background threads unless shared audio prefixes need every doc first."""
        from audio_tasks.pipeline import group_requests, may_share_prefix, prepare_all, stream_loglikelihood

        out: list[Any] = [None] * len(requests)
        emit = self._emitter(requests, out)
        docs = group_requests(requests)
        if may_share_prefix(self, docs):
            self._loglikelihood_tokens(prepare_all(self, docs), emit=emit)
        else:
            stream_loglikelihood(self, docs, emit)
        return out

    def _emitter(self, requests: list[Instance], out: list[Any]):
        cache_args = self.cache_args(requests)

        def emit(sub, scores) -> None:
            self.run_record.note_scored(sub, scores, self.steer_cfg.steer)
            for it, s in zip(sub, scores):
                for r, res in zip(it.meta["reqs"], s.as_results()):
                    out[r] = res
                    if cache_args is not None:
                        self.cache_hook.add_partial("loglikelihood", cache_args[r], res)

        return emit

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """TemplateLM's token-level step on scoring items (prompt ids with audio, continuation ids), task by task
        with shared audio prefixes per ``share_prefix`` (:func:`audio_tasks.batching.score_tasks`);
        ``emit(items, scores)`` per scored part.  Returns (log-likelihood, is_greedy) per continuation, in item
        order."""
        from audio_tasks.batching import score_tasks

        items = list(requests)
        scores = score_tasks(self.engine, items, self.share_prefix, self.batch, self.intervention_for,
                             kwargs.get("emit") or (lambda sub, scores: None), score=self.score_batches,
                             disable=self.rank != 0)
        return [res for s in scores for res in s.as_results()]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Text-only rolling log-likelihood (:func:`audio_tasks.rolling.rolling_loglikelihood`)."""
        from audio_tasks.rolling import rolling_loglikelihood

        return rolling_loglikelihood(self.engine, requests, prefix_token=self.prefix_token_id,
                                     max_length=self.max_length, cache_hook=self.cache_hook,
                                     disable=disable_tqdm or self.rank != 0)

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation with audio, batched (left padding, KV cache, incremental decoding; see
        :mod:`interventions.generation`); stops at any ``until`` string, EOS or ``max_gen_toks``."""
        from audio_tasks.pipeline import generate_requests

        return generate_requests(self, requests, disable_tqdm=disable_tqdm)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "AudioLALM":
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string) if isinstance(arg_string, str) else dict(arg_string or {})
        return cls(**merge_cli_args(args, additional_config))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "AudioLALM":
        return cls(**merge_cli_args(dict(arg_dict), additional_config))
