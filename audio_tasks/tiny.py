"""Tiny offline models: ``python -m audio_tasks.tiny --arch qwen2_audio --out DIR``.

Writes a ``from_pretrained``-loadable directory (random weights, a few layers, an offline-built
byte-level BPE tokenizer holding every special token the chat template and processor need, the
feature extractor and the processor).  Tests, CI, docs and anyone without a GPU use these.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
]

QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the tokenizer is trained on: the prompts and labels of the shipped tasks, so that labels
# get sensible tokens (some single-token, some multi-token: both scoring paths get exercised).
_LABELS = (
    "male female English German Spanish French Italian Chinese Japanese Korean angry disgust fear "
    "happy sad dog cat pig cow frog hen rooster sheep crow"
)
_CORPUS = [
    "You are a helpful assistant.",
    "What is the gender of the speaker in the speech? Possible options: male, female.",
    "What is the language spoken in the speech? Possible options: English, German, Spanish, French, Italian, Chinese, Japanese, Korean.",
    "What is the emotion of the speaker in the speech? Possible options: angry, disgust, fear, happy, sad.",
    "What animal makes the sound? Possible options: dog, cat, pig, cow, frog, hen, rooster, sheep, crow.",
    "The speaker's gender is The speech's spoken language is The speaker's emotion is The sound file's animal is",
    "The answer is (a) (b) (c) (d) (e) (A) (B) (C) (D) (E) (F) (G) (H) Audio 1: system user assistant",
    "Please identify the gender of the speaker. Which of the following best describes the sound? Based on the given audio,",
    _LABELS,
]


def build_tokenizer(out: Path, vocab_size: int = 600, specials: list[str] | None = None):
    """Train a byte-level BPE offline and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = specials or QWEN_SPECIALS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _CORPUS * 20 + [(" " + _LABELS) * 3]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[s for s in specials if s not in ("<|endoftext|>", "<|im_end|>")],
    )
    fast.padding_side = "left"
    return fast


def tiny_qwen2_audio(out: Path, *, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                     audio_dim: int = 32, audio_layers: int = 2, seed: int = 0, vocab_size: int = 600) -> Path:
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size)
    tok.chat_template = QWEN2_AUDIO_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400, return_attention_mask=True)
    proc = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=QWEN2_AUDIO_CHAT_TEMPLATE)
    cfg = Qwen2AudioConfig(
        audio_config=dict(d_model=audio_dim, encoder_layers=audio_layers, encoder_attention_heads=2,
                          encoder_ffn_dim=audio_dim * 2, num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                         rms_norm_eps=1e-6),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    return out


BUILDERS: dict[str, Callable[..., Path]] = {"qwen2_audio": tiny_qwen2_audio}


def register_builder(name: str, fn: Callable[..., Path]) -> None:
    BUILDERS[name] = fn


def build(arch: str, out: Path, **kw) -> Path:
    if arch not in BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[arch](Path(out), **kw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", required=True, help="one of: " + ", ".join(sorted(BUILDERS)))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=4)
    a = p.parse_args(argv)
    path = build(a.arch, Path(a.out), seed=a.seed, layers=a.layers)
    print(json.dumps({"arch": a.arch, "path": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
