"""Specs of the papers' own models, written from their published code (``trust_remote_code=True``).

AudioLens analysed DeSTA2, Qwen-Audio-Chat and Qwen2-Audio; the causal-tracing paper DeSTA2, DeSTA2.5, Qwen-Audio,
Qwen2-Audio and Voxtral.  The first three load only with their checkpoints' own code, which cannot be run here,
so these specs are *written from the published code, not run*: loading one stops with ``not_run_reason``.
What is tested (tests/test_specs_remote.py): every path resolves on a module tree with the published layout,
and the audio-position rules below give the positions the published code fills with audio.

What "audio positions" means (silence baseline, audio masking, attention-to-audio):

* Qwen-Audio-Chat (``QWenLMHeadModel``): the tokenizer turns ``<audio>path</audio>`` into ``audio_start_id``,
  ``span - 2`` pad ids and ``audio_start_id + 1``; the model overwrites the embeddings of *all* of them, the
  start and end tokens included, with the encoder's ``[bos, audio frames, eos]`` rows.  Audio positions =
  ``a..b`` inclusive for each (start ``a``, end ``b``) pair.
* DeSTA2 (``DestaModel``): no audio token.  The chat template renders an ``audio`` turn holding the file path;
  the text is split at the path, Whisper's *transcription* is prepended to the right part, and the 64 Q-Former
  outputs are concatenated into the embeddings at ``p = len(tokenizer.tokenize(left_text))``.  Audio positions =
  ``p..p+63``; the transcription is text (it follows the audio) and stays in the prompt for the silence baseline.
  Because ``tokenizer(context)`` adds a BOS that ``p`` does not count (Llama-3's template already emits one), the
  published code inserts the audio one token *before* the end of ``left_text``; the rule reproduces that.
* DeSTA2.5-Audio (``DeSTA25AudioModel``): each ``<|AUDIO|>`` locator becomes ``prompt_size + len(transcription)``
  copies of ``<|reserved_special_token_87|>``; the first ``prompt_size`` (64) are overwritten with the Q-Former
  outputs, the rest with the transcription's token embeddings.  Audio positions = the first 64 of each run;
  the transcription positions are text, as for DeSTA2.
"""

from __future__ import annotations

from typing import Sequence

from .arch_spec import ArchSpec

_NOT_RUN = ("spec written from the published code, not run here: the engine does not yet build this model's "
            "audio inputs (its own code places {what}); see interventions/specs_remote.py")


def qwen_audio_positions(input_ids: Sequence[int], audio_start_id: int) -> list[int]:
    """Qwen-Audio: positions ``a..b`` (inclusive) of every ``audio_start_id`` .. ``audio_start_id + 1`` pair."""
    out: list[int] = []
    start = None
    for i, t in enumerate(int(x) for x in input_ids):
        if t == audio_start_id:
            if start is not None:
                raise ValueError(f"audio start at {i} before the audio opened at {start} was closed")
            start = i
        elif t == audio_start_id + 1:
            if start is None:
                raise ValueError(f"audio end at {i} without an audio start")
            out.extend(range(start, i + 1))
            start = None
    if start is not None:
        raise ValueError(f"audio opened at {start} is never closed")
    return out


def desta2_audio_positions(left_text_tokens: int, prompt_size: int = 64) -> list[int]:
    """DeSTA2: the Q-Former outputs are inserted at ``p = len(tokenizer.tokenize(left_text))`` of the tokenized
    context (which starts with the BOS the tokenizer adds), so they occupy ``p .. p + prompt_size - 1``."""
    if left_text_tokens < 0 or prompt_size <= 0:
        raise ValueError(f"left_text_tokens={left_text_tokens}, prompt_size={prompt_size}: must be >= 0 and > 0")
    return list(range(left_text_tokens, left_text_tokens + prompt_size))


def desta25_audio_positions(input_ids: Sequence[int], placeholder_id: int, transcription_sizes: Sequence[int],
                            prompt_size: int = 64) -> tuple[list[int], list[int]]:
    """DeSTA2.5-Audio: (audio positions, transcription positions) of a sequence whose locators the published
    code expanded to ``prompt_size + transcription_sizes[i]`` placeholders each (clips in order)."""
    ids = [int(x) for x in input_ids]
    audio: list[int] = []
    text: list[int] = []
    sizes = list(transcription_sizes)
    i = 0
    while i < len(ids):
        if ids[i] != placeholder_id:
            i += 1
            continue
        if not sizes:
            raise ValueError(f"placeholder at {i} but all {len(transcription_sizes)} clips are placed")
        t = int(sizes.pop(0))
        n = prompt_size + t
        if ids[i:i + n] != [placeholder_id] * n:
            raise ValueError(f"clip at {i}: expected {n} placeholders ({prompt_size} audio + {t} transcription)")
        audio.extend(range(i, i + prompt_size))
        text.extend(range(i + prompt_size, i + n))
        i += n
    if sizes:
        raise ValueError(f"{len(sizes)} clip(s) have no placeholders in the sequence")
    return audio, text


QWEN_AUDIO_CHAT = ArchSpec(
    name="qwen_audio_chat",
    model_types=("qwen",),  # Qwen/Qwen-Audio-Chat, Qwen/Qwen-Audio (config carries `audio` and audio_start_id)
    model_class="QWenLMHeadModel",
    decoder="transformer",  # QWenModel: wte, h (QWenBlock: ln_1, attn, ln_2, mlp), ln_f
    layers="h",
    norm="ln_f",
    embed="wte",
    attn="attn",
    o_proj="c_proj",  # QWenAttention: fused c_attn (q, k, v), output projection c_proj over the H heads
    text_config="",  # flat config: num_hidden_layers, num_attention_heads, hidden_size, kv_channels
    audio_token_attrs=("audio_start_id",),
    remote_code=True,
    not_run_reason=_NOT_RUN.format(
        what="encoder rows over <audio>..</audio> spans from its tokenizer's audio_info"),
    audio_positions=qwen_audio_positions,  # head size = hidden_size / heads = kv_channels (128)
)

DESTA2 = ArchSpec(
    name="desta2",
    model_types=("DestaModel",),  # DeSTA-ntu/DeSTA2-8B-beta
    model_class="DestaModel",
    decoder="llama.model",  # LlamaModel (Llama-3-8B-Instruct)
    unembed="llama.lm_head",
    text_config="llama_config",
    remote_code=True,
    not_run_reason=_NOT_RUN.format(what="64 Q-Former rows plus Whisper's generated transcription"),
    audio_positions=desta2_audio_positions, config_attrs={"prompt_size": "prompt_size"},
)

DESTA25 = ArchSpec(
    name="desta25_audio",
    model_types=("desta25",),  # DeSTA-ntu/DeSTA2.5-Audio-Llama-3.1-8B
    model_class="DeSTA25AudioModel",
    decoder="llm_model.model",  # LlamaModel (Llama-3.1-8B-Instruct)
    unembed="llm_model.lm_head",
    text_config="llm_config",
    remote_code=True,
    not_run_reason=_NOT_RUN.format(what="64 Q-Former rows plus the transcription's embeddings per locator"),
    audio_positions=desta25_audio_positions,
    config_attrs={"placeholder_token": "placeholder_token", "audio_locator": "audio_locator",
                  "prompt_size": "prompt_size"},
)


SPECS_REMOTE = (QWEN_AUDIO_CHAT, DESTA2, DESTA25)
