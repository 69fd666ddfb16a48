"""Tiny offline models: ``python -m audio_tasks.tiny --arch {qwen2_audio,voxtral,qwen2_5_omni} --out DIR``.

Writes a ``from_pretrained``-loadable directory (random weights, a few layers, an offline-built
byte-level BPE tokenizer holding every special token the chat template and processor need, the
feature extractor and the processor).  Tests, CI, docs and anyone without a GPU use these.

``--vocab real`` writes a twin of the published checkpoint instead (real vocabulary, special-token ids,
chat template, processor class; tiny random weights): see :mod:`audio_tasks.twins`.

Voxtral and Qwen2.5-Omni use processors defined here (``TinyVoxtralProcessor``,
``TinyQwen2_5OmniProcessor``) and registered with transformers' ``AutoProcessor`` when this module is
imported; the loader (``audio_tasks.processors.prepare``) imports it when a checkpoint names one of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch

from audio_tasks.data.sakura_tracks import TRACKS as SAKURA_TRACKS
from audio_tasks.data.sakura_tracks import p3_user_prompt
from interventions.processors import VOXTRAL_CHAT_TEMPLATE  # the text form of mistral-common's format

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
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the tokenizer is trained on: the prompts and labels of the shipped tasks, so that labels
# get sensible tokens (some single-token, some multi-token: both scoring paths get exercised).
_LABELS = " ".join(label for t in SAKURA_TRACKS.values() for label in t.labels)
_CORPUS = [
    "You are a helpful assistant.",
    *(p3_user_prompt(t) for t in SAKURA_TRACKS.values()),
    " ".join(t.prefix for t in SAKURA_TRACKS.values()),
    "The answer is (a) (b) (c) (d) (e) (A) (B) (C) (D) (E) (F) (G) (H) Audio 1: system user assistant",
    "Please identify the gender of the speaker. Which of the following best describes the sound? "
    "Based on the given audio,",
    _LABELS,
]


def build_tokenizer(out: Path, vocab_size: int = 600, specials: list[str] | None = None, *,
                    eos_token: str = "<|im_end|>", pad_token: str = "<|endoftext|>", bos_token: str | None = None,
                    unk_token: str | None = None, extra_special_tokens: dict[str, str] | None = None):
    """Train a byte-level BPE offline and save it as a transformers fast tokenizer.

    ``specials`` are added as special tokens (matched whole in any text); the named roles
    (eos/pad/bos/unk) must be among them.  ``extra_special_tokens`` maps attribute names the
    processor reads (``audio_token``...) to special tokens, as in the real checkpoints' configs."""
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
    roles = {eos_token, pad_token, bos_token, unk_token}
    kwargs = {"extra_special_tokens": dict(extra_special_tokens)} if extra_special_tokens else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        bos_token=bos_token,
        unk_token=unk_token,
        additional_special_tokens=[s for s in specials if s not in roles],
        **kwargs,
    )
    fast.padding_side = "left"
    return fast


def make_qwen2_audio(tok, *, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                     audio_dim: int = 32, audio_layers: int = 2, seed: int = 0, window_s: int = 30,
                     audio_extra: dict | None = None):
    """(model, processor) of a small Qwen2-Audio around tokenizer ``tok`` (random weights from ``seed``).

    ``window_s`` is the feature extractor's window (Whisper: 30 s; 50 encoder positions per second)."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tok.chat_template = QWEN2_AUDIO_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=window_s,
                                 n_fft=400, return_attention_mask=True)
    proc = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=QWEN2_AUDIO_CHAT_TEMPLATE)
    cfg = Qwen2AudioConfig(
        audio_config=dict(d_model=audio_dim, encoder_layers=audio_layers, encoder_attention_heads=2,
                          encoder_ffn_dim=audio_dim * 2, num_mel_bins=128, max_source_positions=window_s * 50,
                          **(audio_extra or {})),
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
    return model, proc


def tiny_qwen2_audio(out: Path, *, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                     audio_dim: int = 32, audio_layers: int = 2, seed: int = 0, vocab_size: int = 600) -> Path:
    """Build and save a tiny random Qwen2-Audio checkpoint under ``out``; return ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size)
    model, proc = make_qwen2_audio(tok, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                                   audio_dim=audio_dim, audio_layers=audio_layers, seed=seed)
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    return out


# ---- Voxtral ---------------------------------------------------------------------------------

VOXTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                    "[AUDIO]", "[BEGIN_AUDIO]"]



def _processor_classes():
    """Define the offline processors and register them with ``AutoProcessor`` (runs once, at import)."""
    import numpy as np
    from transformers import AutoProcessor
    from transformers.feature_extraction_utils import BatchFeature
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor
    from transformers.processing_utils import ProcessorMixin

    class TinyVoxtralProcessor(ProcessorMixin):
        """Voxtral processor usable offline and by the engine (no mistral-common).

        transformers' ``VoxtralProcessor`` only handles audio through mistral-common's tokenizer in
        ``apply_chat_template(tokenize=True)``; its ``__call__`` rejects audio placeholders.  This one renders
        the Mistral chat format as text (``apply_chat_template(..., tokenize=False)``) and, in
        ``__call__(text=..., audio=...)``, expands each ``[AUDIO]`` placeholder to the encoder's token count:
        audio is zero-padded to a multiple of 30 s (``pad_to_multiple_of`` = 480000 samples, as VoxtralProcessor
        does), each 30-s chunk is a 3000-frame mel window and gives ``audio_tokens_per_chunk`` = 375 tokens
        (1500 encoder frames, 4 frames per token after the encoder->projector reshape).  ``input_features``
        has one row per chunk (clips in order), exactly what ``VoxtralForConditionalGeneration`` expects.
        """

        audio_token = "[AUDIO]"
        begin_audio_token = "[BEGIN_AUDIO]"

        def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None,
                     audio_tokens_per_chunk: int = 375):
            self.audio_tokens_per_chunk = int(audio_tokens_per_chunk)
            super().__init__(feature_extractor, tokenizer,
                             chat_template=chat_template if chat_template is not None else VOXTRAL_CHAT_TEMPLATE)
            self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)  # pyright: ignore[reportOptionalMemberAccess]

        def _features(self, clip, sampling_rate):
            fe = self.feature_extractor
            out = fe(np.asarray(clip, dtype=np.float32), sampling_rate=sampling_rate, padding=True,
                     truncation=False, pad_to_multiple_of=fe.n_samples, return_tensors="np")
            feats = out["input_features"]  # (1, mel, frames * n_chunks)
            chunks = feats.reshape(fe.feature_size, -1, fe.nb_max_frames).transpose(1, 0, 2)
            return chunks  # (n_chunks, mel, frames)

        def __call__(self, text=None, audio=None, sampling_rate=None, return_tensors=None, padding=True,
                     add_special_tokens=False, **kwargs):
            if text is None:
                raise ValueError("TinyVoxtralProcessor needs `text`")
            texts = [text] if isinstance(text, str) else list(text)
            clips = [] if audio is None else ([audio] if isinstance(audio, np.ndarray) and audio.ndim == 1
                                              else list(audio))
            n_ph = sum(t.count(self.audio_token) for t in texts)
            if n_ph != len(clips):
                raise ValueError(f"{n_ph} {self.audio_token} placeholders in the text but {len(clips)} audio clips")
            sr = int(sampling_rate or self.feature_extractor.sampling_rate)
            if sr != self.feature_extractor.sampling_rate:
                raise ValueError(f"audio must be sampled at {self.feature_extractor.sampling_rate} Hz, got {sr}")
            chunks = [self._features(c, sr) for c in clips]
            it = iter(chunks)
            expanded = []
            for t in texts:
                pieces = t.split(self.audio_token)
                buf = pieces[0]
                for piece in pieces[1:]:
                    buf += self.audio_token * (self.audio_tokens_per_chunk * next(it).shape[0]) + piece
                expanded.append(buf)
            enc = self.tokenizer(expanded, padding=padding, add_special_tokens=add_special_tokens)
            data = dict(enc)
            if chunks:
                data["input_features"] = np.concatenate(chunks, 0)
            return BatchFeature(data=data, tensor_type=return_tensors)

    class TinyQwen2_5OmniProcessor(Qwen2_5OmniProcessor):
        """``Qwen2_5OmniProcessor`` for audio + text only (same ``__call__``, placeholders and chat template).

        The real processor also needs an image and a video processor, and transformers' Qwen2-VL video
        processor requires torchvision (absent here; installing it would replace torch).  Audio+text
        processing never touches them, so this subclass simply does not have them."""

        def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None):
            ProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
            for name in ("image_token", "audio_token", "video_token", "image_token_id", "audio_token_id",
                         "video_token_id", "vision_bos_token", "vision_eos_token", "audio_bos_token",
                         "audio_eos_token"):
                setattr(self, name, getattr(self.tokenizer, name))

    # Registration keys: plain classes (not model configs), so real checkpoints keep their processors and
    # only directories whose processor_config.json names these classes resolve to them.
    class _TinyVoxtralKey:
        pass

    class _TinyQwen2_5OmniKey:
        pass

    AutoProcessor.register(_TinyVoxtralKey, TinyVoxtralProcessor, exist_ok=True)
    AutoProcessor.register(_TinyQwen2_5OmniKey, TinyQwen2_5OmniProcessor, exist_ok=True)
    return TinyVoxtralProcessor, TinyQwen2_5OmniProcessor


TinyVoxtralProcessor, TinyQwen2_5OmniProcessor = _processor_classes()


def _save(model, proc, tok, out: Path) -> Path:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    return out


def tiny_voxtral(out: Path, *, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                 audio_dim: int = 32, audio_layers: int = 2, seed: int = 0, vocab_size: int = 600) -> Path:
    """Voxtral (Whisper-style encoder over 30-s windows, 4-frame reshape + 2-layer projector, Llama text
    model).  ``intermediate_size = 4 * d_model`` keeps the real 375 tokens per 30-s chunk."""
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size, specials=VOXTRAL_SPECIALS, eos_token="</s>",
                          pad_token="<pad>", bos_token="<s>", unk_token="<unk>")
    tok.chat_template = VOXTRAL_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400)
    proc = TinyVoxtralProcessor(feature_extractor=fe, tokenizer=tok, chat_template=VOXTRAL_CHAT_TEMPLATE)
    cfg = VoxtralConfig(
        audio_config=dict(model_type="voxtral_encoder", hidden_size=audio_dim, intermediate_size=audio_dim * 4,
                          num_hidden_layers=audio_layers, num_attention_heads=2, num_mel_bins=128,
                          max_source_positions=1500),
        text_config=dict(model_type="llama", hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         head_dim=hidden // heads, vocab_size=len(tok), max_position_embeddings=2048,
                         tie_word_embeddings=False, rms_norm_eps=1e-5,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        audio_token_id=tok.convert_tokens_to_ids("[AUDIO]"),
    )
    torch.manual_seed(seed)
    return _save(VoxtralForConditionalGeneration(cfg), proc, tok, out)


# ---- Qwen2.5-Omni thinker -------------------------------------------------------------------

QWEN2_5_OMNI_SPECIALS = QWEN_SPECIALS + ["<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>",
                                         "<|vision_pad|>"]
QWEN2_5_OMNI_TOKEN_ATTRS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
# transformers' Qwen2.5-Omni processor chat template (default system turn "You are a helpful assistant.").
QWEN2_5_OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen2_5_omni(out: Path, *, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                      audio_dim: int = 32, audio_layers: int = 2, seed: int = 0, vocab_size: int = 600) -> Path:
    """Qwen2.5-Omni *thinker* (audio tower + tiny unused vision tower + M-RoPE text model); the talker and
    token2wav are not part of it.  ``mrope_section`` must sum to head_dim/2 (here [2, 3, 3] for 16)."""
    from transformers import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size, specials=QWEN2_5_OMNI_SPECIALS,
                          extra_special_tokens=QWEN2_5_OMNI_TOKEN_ATTRS)
    tok.chat_template = QWEN2_5_OMNI_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400, return_attention_mask=True, padding_value=0.0)
    proc = TinyQwen2_5OmniProcessor(feature_extractor=fe, tokenizer=tok, chat_template=QWEN2_5_OMNI_CHAT_TEMPLATE)
    head_dim = hidden // heads
    half = head_dim // 2
    mrope = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]  # [2, 3, 3]; real model: [16, 24, 24]
    ids = tok.convert_tokens_to_ids
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=audio_layers, encoder_attention_heads=2,
                          encoder_ffn_dim=audio_dim * 2, d_model=audio_dim, max_source_positions=1500,
                          n_window=100, output_dim=hidden),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[0]),
        text_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=len(tok),
                         max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope}),
        audio_token_index=ids("<|AUDIO|>"),
        image_token_index=ids("<|IMAGE|>"),
        video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"),
        audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
        vision_end_token_id=ids("<|vision_eos|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return _save(Qwen2_5OmniThinkerForConditionalGeneration(cfg), proc, tok, out)


BUILDERS: dict[str, Callable[..., Path]] = {"qwen2_audio": tiny_qwen2_audio, "voxtral": tiny_voxtral,
                                            "qwen2_5_omni": tiny_qwen2_5_omni}


from audio_tasks.tiny_more import BUILDERS_MORE  # noqa: E402  (architectures of issue #15)

BUILDERS.update(BUILDERS_MORE)


# Real-vocabulary twins (``--vocab real``), see :mod:`audio_tasks.twins`; resolved lazily (name -> builder).
TWIN_BUILDERS: dict[str, Callable[..., Path] | None] = {"qwen2_audio": None, "voxtral": None, "qwen2_5_omni": None}
VOCABS = ("tiny", "real")


def build(arch: str, out: Path, vocab: str = "tiny", **kw) -> Path:
    """Build the tiny checkpoint of ``arch`` with vocabulary ``vocab`` under ``out``; return its path."""
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocab {vocab!r}; valid: {', '.join(VOCABS)}")
    table = BUILDERS if vocab == "tiny" else TWIN_BUILDERS
    if arch not in table:
        raise ValueError(f"unknown arch {arch!r} for --vocab {vocab}; valid: {', '.join(sorted(table))}")
    fn = table[arch]
    if fn is None:
        from . import twins

        fn = twins.TWIN_BUILDERS[arch]
    return fn(Path(out), **kw)


def main(argv: list[str] | None = None) -> int:
    """Command line: build a tiny checkpoint; return the exit code."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", required=True, help="one of: " + ", ".join(sorted(BUILDERS)))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: 4 tiny, 2 real)")
    p.add_argument("--vocab", default="tiny", choices=VOCABS,
                   help="tiny: 600-token offline BPE (fast, default); real: the checkpoint's real vocabulary, "
                        "special tokens, chat template and processor (a 'twin', see audio_tasks/twins.py)")
    a = p.parse_args(argv)
    kw = {"seed": a.seed}
    if a.layers is not None:
        kw["layers"] = a.layers
    path = build(a.arch, Path(a.out), vocab=a.vocab, **kw)
    print(json.dumps({"arch": a.arch, "vocab": a.vocab, "path": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
