"""Real processors in the load path: checks for the optional extras and the Voxtral adapter.

``load_model`` calls :func:`prepare` before ``AutoProcessor.from_pretrained`` (it reads the checkpoint's
``processor_class`` and fails with an error naming the extra to install when a real processor cannot
load) and :func:`adapt` after it (a real ``VoxtralProcessor`` is wrapped in :class:`MistralVoxtralProcessor`).

* **Voxtral** (``pip install -e ".[voxtral]"``): real checkpoints tokenize through mistral-common.
  transformers' ``VoxtralProcessor.__call__`` rejects audio; only ``apply_chat_template(tokenize=True)``
  takes it.  :class:`MistralVoxtralProcessor` gives the engine what it needs (render a prompt as text,
  then ``processor(text=..., audio=...)``) with mistral-common doing every part of the tokenization:
  control tokens by their Tekken ids, text with the Tekken BPE, each audio clip with mistral-common's
  ``AudioEncoder`` (``[BEGIN_AUDIO]`` + 12.5 ``[AUDIO]`` tokens per second after padding to 30-s
  windows) and its mel features with ``VoxtralProcessor``'s own feature code: a 45-s clip becomes two
  30-s windows, 750 audio tokens, exactly as ``VoxtralProcessor.apply_chat_template`` produces it.
* **Qwen2.5-Omni** (``pip install -e ".[omni]"``): ``Qwen2_5OmniProcessor`` loads an image and a video
  processor; the video processor needs torchvision (a build matching the installed torch).
* Tiny offline checkpoints name processor classes of the test fixtures (``audio_tasks.tiny``); this module
  never imports them: ``audio_tasks.processors.prepare`` registers them before loading (``interventions``
  never imports ``audio_tasks``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["prepare", "adapt", "MistralVoxtralProcessor", "processor_class_of", "EXTRAS",
           "VOXTRAL_CHAT_TEMPLATE", "require_extra"]

# processor_class -> (extra, probe module, what needs it)
EXTRAS = {
    "VoxtralProcessor": ("voxtral", "mistral_common", "real Voxtral checkpoints tokenize with mistral-common"),
    "Qwen2_5OmniProcessor": ("omni", "torchvision",
                             "the real Qwen2_5OmniProcessor loads a video processor that needs torchvision"),
}
_TINY_CLASSES = ("TinyVoxtralProcessor", "TinyQwen2_5OmniProcessor")

# The text form of mistral-common's instruct format for Voxtral (InstructTokenizerV7): content chunks in
# order inside [INST]...[/INST]; an audio chunk is [BEGIN_AUDIO] + its [AUDIO] tokens (one placeholder
# here, expanded by the processor); the assistant turn starts right after [/INST].
VOXTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]"
    "{% for c in parts %}{% if 'text' in c %}{{ c['text'] }}{% endif %}{% endfor %}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]"
    "{% for c in parts %}"
    "{% if c['type'] == 'audio' or 'audio' in c or 'audio_url' in c %}[BEGIN_AUDIO][AUDIO]"
    "{% elif 'text' in c %}{{ c['text'] }}{% endif %}"
    "{% endfor %}[/INST]"
    "{% elif message['role'] == 'assistant' %}"
    "{% for c in parts %}{% if 'text' in c %}{{ c['text'] }}{% endif %}{% endfor %}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)


def processor_class_of(pretrained: str) -> str | None:
    """The ``processor_class`` a local checkpoint directory names (None when not local or not named)."""
    d = Path(pretrained)
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        f = d / name
        if f.is_file():
            try:
                cls = json.loads(f.read_text()).get("processor_class")
            except (OSError, ValueError):
                continue
            if cls:
                return str(cls)
    return None


def _usable(module: str) -> Exception | None:
    import importlib

    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - an installed but broken build (e.g. a CUDA torchvision) counts too
        return e
    return None


def require_extra(processor_class: str) -> None:
    """Raise ImportError naming the extra to install if ``processor_class`` needs a missing package."""
    if processor_class not in EXTRAS:
        return
    extra, module, why = EXTRAS[processor_class]
    err = _usable(module)
    if err is not None:
        raise ImportError(f"this checkpoint's processor is {processor_class}: {why}. Install the extra: "
                          f"pip install -e \".[{extra}]\" (importing {module} failed: "
                          f"{type(err).__name__}: {str(err).strip()[:200]})")


# Processor class of the published checkpoints by model_type (hub ids, where no local file can be read).
_DEFAULT_PROCESSOR = {"voxtral": "VoxtralProcessor", "qwen2_5_omni": "Qwen2_5OmniProcessor",
                      "qwen2_5_omni_thinker": "Qwen2_5OmniProcessor"}


def prepare(pretrained: str, model_type: str | None = None) -> str | None:
    """Before ``AutoProcessor``: import the tiny processor classes if named; check the extras."""
    cls = processor_class_of(pretrained)
    if cls is None and not Path(pretrained).is_dir():
        cls = _DEFAULT_PROCESSOR.get(str(model_type))
    if cls and cls not in _TINY_CLASSES:
        require_extra(cls)
    return cls


def adapt(processor: Any) -> Any:
    """After ``AutoProcessor``: the processor the engine uses."""
    if type(processor).__name__ == "VoxtralProcessor":
        return MistralVoxtralProcessor(processor)
    return processor


class _TekkenText:
    """Tokenizer facade the engine and lm-eval glue use (``tok(text)["input_ids"]``, ids, decode).

    Text is split at control-token strings (``[INST]``, ``[AUDIO]``, ``<s>``...): those map to their
    Tekken ids, everything else goes through the Tekken BPE (mistral-common), never adding BOS/EOS."""

    padding_side = "left"

    def __init__(self, backend: Any):
        self.backend = backend  # transformers MistralCommonBackend
        self.mistral = backend.tokenizer  # mistral_common MistralTokenizer
        self.tekken = self.mistral.instruct_tokenizer.tokenizer
        names = [str(t["token_str"]) for t in self.tekken._all_special_tokens
                 if not str(t["token_str"]).startswith("<SPECIAL_")]
        self._control = {n: int(self.tekken.get_control_token(n)) for n in names}
        self._split = re.compile("(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + ")")
        self.bos_token, self.eos_token, self.pad_token = "<s>", "</s>", "<pad>"
        self.bos_token_id = int(self.tekken.bos_id)
        self.eos_token_id = int(self.tekken.eos_id)
        self.pad_token_id = int(self.tekken.pad_id)
        self.name_or_path = getattr(backend, "name_or_path", "")
        self.chat_template = VOXTRAL_CHAT_TEMPLATE

    def __len__(self) -> int:
        return int(self.tekken.n_words)

    @property
    def vocab_size(self) -> int:
        return len(self)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        for piece in self._split.split(text):
            if not piece:
                continue
            if piece in self._control:
                ids.append(self._control[piece])
            else:
                ids.extend(self.tekken.encode(piece, bos=False, eos=False))
        return ids

    def __call__(self, text: Any, add_special_tokens: bool = False, **_: Any) -> dict[str, Any]:
        if isinstance(text, str):
            return {"input_ids": self.encode(text)}
        return {"input_ids": [self.encode(t) for t in text]}

    def convert_tokens_to_ids(self, token: Any) -> Any:
        if isinstance(token, (list, tuple)):
            return [self.convert_tokens_to_ids(t) for t in token]
        return self._control.get(token, self.tekken.unk_id)

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        if isinstance(ids, (list, tuple)):
            return [self.convert_ids_to_tokens(i) for i in ids]
        return self.tekken.id_to_piece(int(ids))

    def decode(self, ids: Any, skip_special_tokens: bool = False, **_: Any) -> str:
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        policy = SpecialTokenPolicy.IGNORE if skip_special_tokens else SpecialTokenPolicy.KEEP
        return self.tekken.decode(ids, special_token_policy=policy)


class MistralVoxtralProcessor:
    """A real ``VoxtralProcessor`` seen through the engine's processor interface (tokenization by
    mistral-common; see the module docstring).  ``processor(text=[prompt], audio=[clips])`` returns
    ``input_ids``, ``attention_mask`` and ``input_features`` (one row per 30-s window, clips in order),
    what ``VoxtralForConditionalGeneration`` takes."""

    audio_token = "[AUDIO]"
    begin_audio_token = "[BEGIN_AUDIO]"

    def __init__(self, processor: Any):
        from mistral_common.tokens.tokenizers.audio import AudioEncoder

        self.inner = processor
        self.feature_extractor = processor.feature_extractor
        self.tokenizer = _TekkenText(processor.tokenizer)
        enc = self.tokenizer.mistral.instruct_tokenizer.audio_encoder
        if not isinstance(enc, AudioEncoder):
            raise ValueError("this Voxtral tokenizer file has no audio configuration (tekken.json 'audio' section)")
        self.audio_encoder = enc
        self.audio_token_id = self.tokenizer.convert_tokens_to_ids(self.audio_token)
        self.chat_template = VOXTRAL_CHAT_TEMPLATE
        kw = dict(getattr(processor, "audio_kwargs", None) or {})
        self._max_source_positions = int(kw.get("max_source_positions", 3000))
        self._pad_to = int(kw.get("pad_to_multiple_of", 480000))

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs: Any) -> str:
        if tokenize:
            return self.inner.apply_chat_template(messages, tokenize=True, **kwargs)
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(VOXTRAL_CHAT_TEMPLATE).render(
            messages=messages, bos_token=self.tokenizer.bos_token, eos_token=self.tokenizer.eos_token,
            add_generation_prompt=add_generation_prompt)

    def encode_audio(self, clip: np.ndarray, sampling_rate: int):
        """(token ids ``[BEGIN_AUDIO] + [AUDIO] * n``, mel windows (k, mel, frames)) by mistral-common."""
        import torch
        from mistral_common.tokens.tokenizers.audio import Audio

        audio = Audio(np.asarray(clip, dtype=np.float32), int(sampling_rate), format="wav")
        encoding = self.audio_encoder.encode_audio(audio)
        feats = self.inner._retrieve_input_features(
            [encoding.audio.audio_array],  # pyright: ignore[reportOptionalMemberAccess]  (set for audio input)
            self._max_source_positions,
            sampling_rate=self.feature_extractor.sampling_rate,
            padding=True, truncation=False, pad_to_multiple_of=self._pad_to, return_tensors="pt")
        return list(encoding.tokens), torch.as_tensor(feats)

    def __call__(self, text: Any = None, audio: Any = None, sampling_rate: int | None = None,
                 return_tensors: str | None = "pt", padding: bool = True, **_: Any):
        import torch
        from transformers.feature_extraction_utils import BatchFeature

        if text is None:
            raise ValueError("MistralVoxtralProcessor needs `text`")
        texts = [text] if isinstance(text, str) else list(text)
        clips = [] if audio is None else ([audio] if isinstance(audio, np.ndarray) and audio.ndim == 1
                                          else list(audio))
        sr = int(sampling_rate or self.feature_extractor.sampling_rate)
        ph = self.begin_audio_token + self.audio_token
        n_ph = sum(t.count(ph) for t in texts)
        if n_ph != len(clips):
            raise ValueError(f"{n_ph} {ph} placeholders in the text but {len(clips)} audio clips")
        encoded = [self.encode_audio(c, sr) for c in clips]
        it = iter(encoded)
        rows: list[list[int]] = []
        for t in texts:
            pieces = t.split(ph)
            ids = self.tokenizer.encode(pieces[0])
            for piece in pieces[1:]:
                ids.extend(next(it)[0])
                ids.extend(self.tokenizer.encode(piece))
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if encoded:
            data["input_features"] = torch.cat([f for _, f in encoded], 0)
        return BatchFeature(data=data, tensor_type=return_tensors)
