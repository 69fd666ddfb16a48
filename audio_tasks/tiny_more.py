"""Tiny offline models of the transformers-native LALMs added for issue #15.

``python -m audio_tasks.tiny --arch {audio_flamingo3,qwen3_omni_moe,granite_speech} --out DIR`` (these builders are
registered with :mod:`audio_tasks.tiny`'s dispatch when that module is imported).  As there: random weights, a
few layers, an offline byte-level BPE tokenizer holding every special token the chat template and processor
need, and the architecture's real processor class -- except where that class needs a package absent here
(see each builder's note on what its processor subclass changes).
"""

from __future__ import annotations

from pathlib import Path

import torch

from audio_tasks.tiny_core import _save, build_tokenizer

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]


# ---- Audio Flamingo 3 ----------------------------------------------------------------------------

AF3_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>"]
# ChatML as in nvidia/audio-flamingo-3-hf: the audio (one <sound> placeholder per clip, expanded by the
# processor) opens the user turn, then the text.
AF3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}<sound>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_audio_flamingo3(out: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                         audio_dim: int = 32, audio_layers: int = 1, seed: int = 0, vocab_size: int = 600) -> Path:
    """Audio Flamingo 3: Whisper-style encoder (+ avg pooling) over 30-s windows, 2-layer projector, Qwen2
    decoder; the real ``AudioFlamingo3Processor`` (one ``<sound>`` placeholder per clip, expanded)."""
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        WhisperFeatureExtractor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size, specials=AF3_SPECIALS)
    tok.chat_template = AF3_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400, return_attention_mask=True)
    proc = AudioFlamingo3Processor(feature_extractor=fe, tokenizer=tok, chat_template=AF3_CHAT_TEMPLATE)
    cfg = AudioFlamingo3Config(
        audio_config=dict(hidden_size=audio_dim, intermediate_size=audio_dim * 2, num_hidden_layers=audio_layers,
                          num_attention_heads=2, num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                         rms_norm_eps=1e-6),
        audio_token_id=tok.convert_tokens_to_ids("<sound>"),
    )
    torch.manual_seed(seed)
    return _save(AudioFlamingo3ForConditionalGeneration(cfg), proc, tok, out)


MUSIC_FLAMINGO_SPECIALS = AF3_SPECIALS + ["<|sound_bos|>", "<|sound_eos|>"]


def tiny_music_flamingo(out: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                        audio_dim: int = 32, audio_layers: int = 1, seed: int = 0, vocab_size: int = 600) -> Path:
    """Music Flamingo: Audio Flamingo 3's encoder and projector with rotary time embeddings on the encoder
    output; the real ``MusicFlamingoProcessor`` wraps each clip's ``<sound>`` run in sound_bos / sound_eos."""
    from transformers import (
        MusicFlamingoConfig,
        MusicFlamingoForConditionalGeneration,
        MusicFlamingoProcessor,
        WhisperFeatureExtractor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size, specials=MUSIC_FLAMINGO_SPECIALS)
    tok.chat_template = AF3_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400, return_attention_mask=True)
    proc = MusicFlamingoProcessor(feature_extractor=fe, tokenizer=tok, chat_template=AF3_CHAT_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    cfg = MusicFlamingoConfig(
        audio_config=dict(model_type="audioflamingo3_encoder", hidden_size=audio_dim, intermediate_size=audio_dim * 2,
                          num_hidden_layers=audio_layers,
                          num_attention_heads=2, num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                         rms_norm_eps=1e-6),
        audio_token_id=ids("<sound>"), audio_bos_token_id=ids("<|sound_bos|>"), audio_eos_token_id=ids("<|sound_eos|>"),
    )
    torch.manual_seed(seed)
    return _save(MusicFlamingoForConditionalGeneration(cfg), proc, tok, out)


# ---- Qwen3-Omni (MoE) thinker ---------------------------------------------------------------------

QWEN3_OMNI_SPECIALS = QWEN_SPECIALS + ["<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
QWEN3_OMNI_TOKEN_ATTRS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
# Qwen3-Omni's chat template for audio + text turns (no default system turn).
QWEN3_OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen3_omni_processor_class():
    from transformers import AutoProcessor
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import Qwen3OmniMoeProcessor
    from transformers.processing_utils import ProcessorMixin

    class TinyQwen3OmniMoeProcessor(Qwen3OmniMoeProcessor):
        """``Qwen3OmniMoeProcessor`` for audio + text only (its own ``__call__``, audio placeholder expansion
        and token counts).  The real one also holds image and video processors, which need torchvision
        (absent here); audio + text processing never touches them."""

        def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None):
            ProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
            for name in ("image_token", "audio_token", "video_token", "image_token_id", "audio_token_id",
                         "video_token_id", "vision_bos_token", "vision_eos_token", "audio_bos_token",
                         "audio_eos_token"):
                setattr(self, name, getattr(self.tokenizer, name))

    class _Key:
        pass

    AutoProcessor.register(_Key, TinyQwen3OmniMoeProcessor, exist_ok=True)
    return TinyQwen3OmniMoeProcessor


TinyQwen3OmniMoeProcessor = _qwen3_omni_processor_class()


def tiny_qwen3_omni_moe(out: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                        audio_dim: int = 32, audio_layers: int = 1, seed: int = 0, vocab_size: int = 600,
                        experts: int = 4, experts_per_tok: int = 2) -> Path:
    """Qwen3-Omni *thinker*: audio tower (conv downsampling per 100-frame chunk, 13 tokens per full chunk),
    unused tiny vision tower, mixture-of-experts text decoder with interleaved M-RoPE."""
    from transformers import (
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size, specials=QWEN3_OMNI_SPECIALS,
                          extra_special_tokens=QWEN3_OMNI_TOKEN_ATTRS)
    tok.chat_template = QWEN3_OMNI_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300,
                                 n_fft=400, return_attention_mask=True, padding_value=0.0)
    proc = TinyQwen3OmniMoeProcessor(feature_extractor=fe, tokenizer=tok, chat_template=QWEN3_OMNI_CHAT_TEMPLATE)
    head_dim = hidden // heads
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]  # [2, 3, 3]; real model: [24, 20, 20]
    ids = tok.convert_tokens_to_ids
    cfg = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=audio_layers, encoder_attention_heads=2,
                          encoder_ffn_dim=audio_dim * 2, d_model=audio_dim, max_source_positions=1500,
                          n_window=50, n_window_infer=800, output_dim=hidden, downsample_hidden_size=16),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           deepstack_visual_indexes=[0], num_position_embeddings=64),
        text_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                         vocab_size=len(tok), max_position_embeddings=2048, rms_norm_eps=1e-6,
                         moe_intermediate_size=hidden, num_experts=experts, num_experts_per_tok=experts_per_tok,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope,
                                          "mrope_interleaved": True}),
        audio_token_id=ids("<|AUDIO|>"),
        image_token_id=ids("<|IMAGE|>"),
        video_token_id=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return _save(Qwen3OmniMoeThinkerForConditionalGeneration(cfg), proc, tok, out)


# ---- Granite Speech ------------------------------------------------------------------------------

GRANITE_SPECIALS = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>", "<|pad|>"]
# Granite 3.x chat format (system turn omitted): the audio placeholder opens the user's text.
GRANITE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|start_of_role|>{{ message['role'] }}<|end_of_role|>"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}<|audio|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|end_of_text|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)


class _TorchMelSpectrogram(torch.nn.Module):
    """torchaudio.transforms.MelSpectrogram's defaults in plain torch (power 2, centred reflect-padded STFT,
    periodic Hann window of ``win_length`` zero-padded to ``n_fft``, HTK mel filters without norm)."""

    def __init__(self, sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                             max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm=None, mel_scale="htk")
        self.register_buffer("fb", torch.tensor(fb, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True).abs().pow(2)
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)  # (B, n_mels, frames)


def _granite_feature_extractor_class():
    from transformers import AutoFeatureExtractor
    from transformers.models.granite_speech.feature_extraction_granite_speech import GraniteSpeechFeatureExtractor

    class TinyGraniteSpeechFeatureExtractor(GraniteSpeechFeatureExtractor):
        """``GraniteSpeechFeatureExtractor`` (same log-mel scaling, frame stacking and token counts) with its
        torchaudio ``MelSpectrogram`` replaced by the same computation in plain torch (torchaudio is not
        installed here).  ``GraniteSpeechProcessor`` itself is the real class."""

        def __init__(self, sampling_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80,
                     projector_window_size=15, projector_downsample_rate=5, padding_value=0.0, **kwargs):
            feature_size = n_mels if kwargs.get("feature_size") is None else kwargs.pop("feature_size")
            super(GraniteSpeechFeatureExtractor, self).__init__(
                feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
            self.sampling_rate = sampling_rate
            self.melspec_kwargs = {"sample_rate": sampling_rate, "n_fft": n_fft, "win_length": win_length,
                                   "hop_length": hop_length, "n_mels": n_mels}
            self.mel_filters = _TorchMelSpectrogram(**self.melspec_kwargs)
            self.projector_window_size = projector_window_size
            self.projector_downsample_rate = projector_downsample_rate

        def to_dict(self):
            d = super().to_dict()
            d.pop("mel_filters", None)
            return d

        def __call__(self, audios, device="cpu"):
            import transformers.models.granite_speech.feature_extraction_granite_speech as m

            old = m.requires_backends
            m.requires_backends = lambda *a, **k: None  # the torchaudio check only guards mel_filters
            try:
                return super().__call__(audios, device=device)
            finally:
                m.requires_backends = old

        def _extract_mel_spectrograms(self, audio, device="cpu"):
            import transformers.models.granite_speech.feature_extraction_granite_speech as m

            old = m.requires_backends
            m.requires_backends = lambda *a, **k: None
            try:
                return super()._extract_mel_spectrograms(audio, device=device)
            finally:
                m.requires_backends = old

    class _Key:
        pass

    AutoFeatureExtractor.register(_Key, TinyGraniteSpeechFeatureExtractor, exist_ok=True)
    return TinyGraniteSpeechFeatureExtractor


TinyGraniteSpeechFeatureExtractor = _granite_feature_extractor_class()


def tiny_granite_speech(out: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                        audio_dim: int = 32, audio_layers: int = 2, seed: int = 0, vocab_size: int = 600) -> Path:
    """Granite Speech: conformer CTC encoder over stacked log-mel frames, windowed Q-Former projector (15
    encoder frames -> 3 tokens), Granite decoder (embedding / residual / attention multipliers, logits divided
    by ``logits_scaling``).  No LoRA adapter in the tiny model (``has_lora_adapter=False``; peft absent)."""
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration, GraniteSpeechProcessor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size, specials=GRANITE_SPECIALS, eos_token="<|end_of_text|>",
                          pad_token="<|pad|>", extra_special_tokens={"audio_token": "<|audio|>"})
    tok.chat_template = GRANITE_CHAT_TEMPLATE
    fe = TinyGraniteSpeechFeatureExtractor()
    proc = GraniteSpeechProcessor(audio_processor=fe, tokenizer=tok, chat_template=GRANITE_CHAT_TEMPLATE)
    cfg = GraniteSpeechConfig(
        encoder_config=dict(input_dim=160, num_layers=audio_layers, hidden_dim=audio_dim, feedforward_mult=2,
                            num_heads=2, dim_head=16, output_dim=8, context_size=50, max_pos_emb=64, dropout=0.0),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=audio_dim, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=audio_dim * 2, encoder_hidden_size=audio_dim,
                              cross_attention_frequency=1, max_position_embeddings=64),
        text_config=dict(model_type="granite", hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         vocab_size=len(tok), max_position_embeddings=2048, rms_norm_eps=1e-5,
                         embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0078125,
                         logits_scaling=8.0, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id),
        audio_token_index=tok.convert_tokens_to_ids("<|audio|>"),
        has_lora_adapter=False, downsample_rate=5, window_size=15,
    )
    torch.manual_seed(seed)
    return _save(GraniteSpeechForConditionalGeneration(cfg), proc, tok, out)


# ---- Phi-4-multimodal ----------------------------------------------------------------------------

PHI4_SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>", "<|image|>", "<|audio|>"]
# Phi-4-multimodal chat format: <|user|>{audio placeholder}{text}<|end|><|assistant|>
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}<|audio|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _phi4_processor_class():
    from transformers import AutoProcessor
    from transformers.models.phi4_multimodal.processing_phi4_multimodal import Phi4MultimodalProcessor
    from transformers.processing_utils import ProcessorMixin

    class TinyPhi4MultimodalProcessor(Phi4MultimodalProcessor):
        """``Phi4MultimodalProcessor`` for audio + text only (its own audio placeholder expansion by
        ``audio_embed_sizes``); the real one also holds an image processor, which needs torchvision."""

        def __init__(self, audio_processor=None, tokenizer=None, chat_template=None, **kwargs):
            for name in ("image_token", "image_token_id", "audio_token", "audio_token_id"):
                setattr(self, name, getattr(tokenizer, name))
            ProcessorMixin.__init__(self, audio_processor, tokenizer, chat_template=chat_template)

    class _Key:
        pass

    AutoProcessor.register(_Key, TinyPhi4MultimodalProcessor, exist_ok=True)
    return TinyPhi4MultimodalProcessor


TinyPhi4MultimodalProcessor = _phi4_processor_class()


def tiny_phi4_multimodal(out: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                         audio_dim: int = 32, audio_layers: int = 1, seed: int = 0, vocab_size: int = 600) -> Path:
    """Phi-4-multimodal: conformer audio encoder (NeMo conv subsampling, 8x time reduction), speech
    up/down projections, Phi-3-style decoder (fused qkv_proj, o_proj; flat config: no ``text_config``).
    The real checkpoint's speech LoRA is a separate peft adapter: not part of the tiny model."""
    from transformers import Phi4MultimodalConfig, Phi4MultimodalFeatureExtractor, Phi4MultimodalForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size=vocab_size, specials=PHI4_SPECIALS, eos_token="<|end|>",
                          pad_token="<|endoftext|>",
                          extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"})
    tok.chat_template = PHI4_CHAT_TEMPLATE
    fe = Phi4MultimodalFeatureExtractor()
    proc = TinyPhi4MultimodalProcessor(audio_processor=fe, tokenizer=tok, chat_template=PHI4_CHAT_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    cfg = Phi4MultimodalConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
        original_max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14, crop_size=28, image_token_id=ids("<|image|>")),
        audio_config=dict(hidden_size=audio_dim, intermediate_size=audio_dim * 2, num_blocks=audio_layers,
                          num_attention_heads=2, ext_pw_out_channel=audio_dim,
                          depthwise_separable_out_channel=audio_dim, nemo_conv_channels=audio_dim, input_size=80,
                          time_reduction=8, audio_token_id=ids("<|audio|>")),
    )
    torch.manual_seed(seed)
    return _save(Phi4MultimodalForCausalLM(cfg), proc, tok, out)


# ---- Gemma 3n ------------------------------------------------------------------------------------

GEMMA3N_TEXT_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                         "<start_of_audio>"]
# The released layout: the text vocabulary, then a vision range (offset = <end_of_image>, then <image_soft_token>)
# and an audio range (offset = <end_of_audio>, then <audio_soft_token>), each read by its multimodal embedder.
GEMMA3N_VISION_RANGE = ["<end_of_image>", "<image_soft_token>"] + [f"<vision_reserved_{i}>" for i in range(6)]
GEMMA3N_AUDIO_RANGE = ["<end_of_audio>", "<audio_soft_token>"] + [f"<audio_reserved_{i}>" for i in range(6)]
GEMMA3N_TOKEN_ATTRS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                       "eoi_token": "<end_of_image>", "audio_token": "<audio_soft_token>",
                       "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
# Gemma 3n's chat template for audio + text turns (google/gemma-3n-E2B-it, system turn folded into the first
# user turn; the audio item is one <audio_soft_token>, which the processor expands).
GEMMA3N_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'audio' or 'audio' in item or 'audio_url' in item %}<audio_soft_token>"
    "{% elif item['type'] == 'image' %}<image_soft_token>"
    "{% elif 'text' in item %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma3n_tokenizer(out: Path, vocab_size: int = 600):
    """Tiny byte-level BPE tokenizer with Gemma 3n's special tokens and id layout (text vocabulary, then the
    vision and audio ranges of 8 ids each).  The real SentencePiece vocabulary ships with the (gated) checkpoint
    only, not in a package: this tokenizer is tiny."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = build_tokenizer(out, vocab_size=vocab_size, specials=GEMMA3N_TEXT_SPECIALS, eos_token="<eos>",
                          pad_token="<pad>", bos_token="<bos>", unk_token="<unk>")
    backend = tok.backend_tokenizer
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in GEMMA3N_VISION_RANGE + GEMMA3N_AUDIO_RANGE])
    roles = ("<pad>", "<eos>", "<bos>", "<unk>")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", bos_token="<bos>", unk_token="<unk>",
        additional_special_tokens=[t for t in GEMMA3N_TEXT_SPECIALS if t not in roles]
        + GEMMA3N_VISION_RANGE + GEMMA3N_AUDIO_RANGE,
        extra_special_tokens=dict(GEMMA3N_TOKEN_ATTRS))
    fast.padding_side = "left"
    fast.chat_template = GEMMA3N_CHAT_TEMPLATE
    return fast


def tiny_gemma3n(out: Path, *, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                 audio_dim: int = 32, audio_layers: int = 1, seed: int = 0, vocab_size: int = 600,
                 kv_shared_layers: int = 2, sliding_window: int = 512) -> Path:
    """Gemma 3n: conformer audio tower (SSCP convolutions, 4x reduction: at most 188 tokens per 30-s clip) +
    ``embed_audio``, and the Gemma 3n text decoder with everything the engine must handle: AltUp (4 stacked
    streams), per-layer token inputs, LAuReL, sliding / global layers, KV sharing (the last ``kv_shared_layers``
    blocks reuse earlier blocks' keys and values), activation sparsity in the first block and final logit
    soft-capping.  The real ``Gemma3nProcessor`` (188 placeholders per clip) with the real
    ``Gemma3nAudioFeatureExtractor`` and a PIL Siglip image processor; a tiny tokenizer (see
    :func:`gemma3n_tokenizer`).  The vision tower is not built (timm is not installed here; the spec never runs
    it): the checkpoint has no vision weights."""
    from transformers import (
        Gemma3nAudioFeatureExtractor,
        Gemma3nConfig,
        Gemma3nForConditionalGeneration,
        Gemma3nProcessor,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from interventions.arch_extras import stub_towers
    from interventions.specs_more import GEMMA3N

    if layers < 4 or layers % 2:
        raise ValueError(f"layers={layers}: the tiny Gemma 3n needs an even number >= 4 (sliding / global pairs, "
                         "the last kv_shared_layers of them sharing KV)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = gemma3n_tokenizer(out, vocab_size)

    def ids(token: str) -> int:
        return int(tok.convert_tokens_to_ids(token))  # pyright: ignore[reportArgumentType]  (one token: one id)
    n_text = ids(GEMMA3N_VISION_RANGE[0])
    proc = Gemma3nProcessor(feature_extractor=Gemma3nAudioFeatureExtractor(),
                            image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                            tokenizer=tok, chat_template=GEMMA3N_CHAT_TEMPLATE, audio_seq_length=188,
                            image_seq_length=4)
    cfg = Gemma3nConfig(
        text_config=dict(vocab_size=len(tok), vocab_size_per_layer_input=n_text, hidden_size=hidden,
                         intermediate_size=hidden * 2, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, head_dim=hidden // heads, hidden_size_per_layer_input=8,
                         laurel_rank=8, altup_num_inputs=4, num_kv_shared_layers=kv_shared_layers,
                         layer_types=["sliding_attention", "full_attention"] * (layers // 2),
                         sliding_window=sliding_window, max_position_embeddings=2048,
                         activation_sparsity_pattern=[0.95] + [0.0] * (layers - 1), final_logit_softcapping=0.5,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id),
        vision_config=dict(vocab_size=len(GEMMA3N_VISION_RANGE), vocab_offset=n_text, hidden_size=32),
        audio_config=dict(vocab_size=len(GEMMA3N_AUDIO_RANGE), vocab_offset=ids(GEMMA3N_AUDIO_RANGE[0]),
                          hidden_size=audio_dim, conf_num_attention_heads=2, conf_num_hidden_layers=audio_layers,
                          sscp_conv_channel_size=[8, 8]),
        audio_soft_tokens_per_image=188, vision_soft_tokens_per_image=4,
        boi_token_id=ids("<start_of_image>"), eoi_token_id=ids("<end_of_image>"),
        image_token_id=ids("<image_soft_token>"), boa_token_id=ids("<start_of_audio>"),
        eoa_token_id=ids("<end_of_audio>"), audio_token_id=ids("<audio_soft_token>"),
    )
    # final_logit_softcapping: 30 in the released checkpoints; 0.5 here, so that the cap shows in every score.
    torch.manual_seed(seed)
    with stub_towers(GEMMA3N, cfg):
        model = Gemma3nForConditionalGeneration(cfg)
    _randomize_gemma3n(model)
    return _save(model, proc, tok, out)


def _randomize_gemma3n(model) -> None:
    """Gemma 3n's initialisation leaves some parameters at zero or one (AltUp's coefficient maps and output scale,
    the norm scales): random values, so that every stream, coefficient and norm matters in the tests."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.model.language_model.named_parameters():
            if "altup" in name or "norm" in name or "laurel" in name:
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))


BUILDERS_MORE = {
    "gemma3n": tiny_gemma3n,
    "music_flamingo": tiny_music_flamingo,
    "phi4_multimodal": tiny_phi4_multimodal,
    "granite_speech": tiny_granite_speech,
    "audio_flamingo3": tiny_audio_flamingo3,
    "qwen3_omni_moe": tiny_qwen3_omni_moe,
}
