"""Specs of Qwen-Audio-Chat, DeSTA2 and DeSTA2.5-Audio (written from their published code; the code itself is
not run here): every path resolves on a module tree with the published layout, loading says clearly that the
spec is not run, and the audio-position rules give the positions the published code fills with audio, on token
sequences built the way that code builds them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

D, H, L, V = 32, 4, 2, 50


def _text_cfg(**kw):
    return SimpleNamespace(num_hidden_layers=L, num_attention_heads=H, hidden_size=D, **kw)


class _Attn(nn.Module):
    def __init__(self, out_name):
        super().__init__()
        setattr(self, out_name, nn.Linear(D, D, bias=False))


class _Block(nn.Module):
    def __init__(self, attn_name, out_name):
        super().__init__()
        setattr(self, attn_name, _Attn(out_name))


def _stack(embed, layers, norm, attn_name, out_name):
    m = nn.Module()
    setattr(m, embed, nn.Embedding(V, D))
    setattr(m, layers, nn.ModuleList([_Block(attn_name, out_name) for _ in range(L)]))
    setattr(m, norm, nn.LayerNorm(D))
    return m


def _qwen_audio_tree():
    """QWenLMHeadModel: transformer.{wte, h[i].attn.{c_attn, c_proj}, ln_f}, lm_head; flat QWenConfig."""
    root = nn.Module()
    root.transformer = _stack("wte", "h", "ln_f", "attn", "c_proj")
    root.lm_head = nn.Linear(D, V, bias=False)
    root.config = SimpleNamespace(model_type="qwen", audio_start_id=40, kv_channels=D // H, **vars(_text_cfg()))
    return root


def _llama_tree(outer):
    """DeSTA: <outer> = LlamaForCausalLM: model.{embed_tokens, layers[i].self_attn.o_proj, norm}, lm_head."""
    root = nn.Module()
    llm = nn.Module()
    llm.model = _stack("embed_tokens", "layers", "norm", "self_attn", "o_proj")
    llm.lm_head = nn.Linear(D, V, bias=False)
    setattr(root, outer, llm)
    return root


def _desta2_tree():
    root = _llama_tree("llama")
    root.config = SimpleNamespace(model_type="DestaModel", prompt_size=64, llama_config=_text_cfg())
    return root


def _desta25_tree():
    root = _llama_tree("llm_model")
    root.config = SimpleNamespace(model_type="desta25", prompt_size=64, audio_locator="<|AUDIO|>",
                                  placeholder_token="<|reserved_special_token_87|>", llm_config=_text_cfg())
    return root


TREES = {"qwen_audio_chat": _qwen_audio_tree, "desta2": _desta2_tree, "desta25_audio": _desta25_tree}


@pytest.mark.parametrize("name", sorted(TREES))
def test_spec_resolves_on_the_published_layout(name):
    from interventions.specs import SPECS, spec_for_config

    root = TREES[name]()
    spec = spec_for_config(root.config)
    assert spec is SPECS[name] and spec.remote_code and spec.not_run_reason
    assert spec.num_layers(root) == L and spec.num_heads(root) == H and spec.head_dim(root) == D // H
    layers = spec.layer_modules(root)
    assert len(layers) == L
    assert isinstance(spec.embed_module(root), nn.Embedding) and spec.embed_module(root).weight.shape == (V, D)
    assert tuple(spec.norm_module(root).weight.shape) == (D,)
    assert spec.unembed_module(root).out_features == V
    for l in range(1, L + 1):
        o = spec.o_proj_module(root, l)
        assert isinstance(o, nn.Linear) and o.in_features == spec.num_heads(root) * spec.head_dim(root)
        assert o is next(m for m in layers[l - 1].modules() if isinstance(m, nn.Linear))  # the block's own output proj
    if name == "qwen_audio_chat":
        assert spec.audio_token_id(root) == 40


def test_loading_a_not_run_spec_says_so_before_reading_weights(tmp_path, monkeypatch):
    import transformers

    from audio_tasks.model import load_model

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        classmethod(lambda cls, *a, **k: SimpleNamespace(model_type="desta25")))
    with pytest.raises(NotImplementedError, match="desta25_audio.*written from the published code, not run here"):
        load_model(str(tmp_path), trust_remote_code=True)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from audio_tasks.tiny import build_tokenizer

    specials = ["<|endoftext|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<audio>", "</audio>", "[[AUDIO_PAD]]", "<|AUDIO|>", "<|reserved_special_token_87|>"]
    return build_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=400, specials=specials,
                           eos_token="<|eot_id|>", pad_token="<|endoftext|>", bos_token="<|begin_of_text|>")


def _llama3_chat(messages):
    """Llama-3's chat format (the template emits the BOS itself)."""
    out = "<|begin_of_text|>"
    for m in messages:
        out += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def test_qwen_audio_positions_cover_start_pads_and_end(tok):
    """Qwen-Audio's tokenizer: <audio> + (span - 2) pads + </audio>; the model overwrites a..b inclusive."""
    from interventions.specs_remote import qwen_audio_positions

    start = tok.convert_tokens_to_ids("<audio>")
    assert tok.convert_tokens_to_ids("</audio>") == start + 1  # as in Qwen-Audio's vocabulary
    pad = tok.convert_tokens_to_ids("[[AUDIO_PAD]]")
    text = tok("Audio 1:", add_special_tokens=False)["input_ids"]
    tail = tok("What is the gender?", add_special_tokens=False)["input_ids"]
    spans = (7, 5)
    ids, expect = list(text), []
    for span in spans:
        a = len(ids)
        ids += [start] + [pad] * (span - 2) + [start + 1]
        expect += list(range(a, a + span))
        ids += tail
    got = qwen_audio_positions(ids, start)
    assert got == expect and len(got) == sum(spans)
    # the published replacement hidden_states[i][a:b+1] = encoded_audio[idx] touches exactly these positions
    h = torch.zeros(len(ids))
    for a in [i for i, t in enumerate(ids) if t == start]:
        b = ids.index(start + 1, a)
        h[a:b + 1] = 1
    assert h.nonzero().squeeze(-1).tolist() == got
    with pytest.raises(ValueError, match="never closed"):
        qwen_audio_positions(ids[:3] + [start] + tail, start)


def test_desta2_positions_as_the_published_code_inserts_the_audio(tok):
    """DeSTA2: context = left + transcription + right, tokenizer(context) (adds a BOS), audio features
    concatenated at p = len(tokenize(left)): the 64 audio rows land at p..p+63, one token before the end of
    the left text (the BOS the tokenizer adds is not counted in p)."""
    from interventions.specs_remote import desta2_audio_positions

    path, transcription = "/data/clip.wav", "hello there"
    msgs = [{"role": "system", "content": "You are a helpful voice assistant."},
            {"role": "audio", "content": path}, {"role": "user", "content": "What is the gender?"}]
    context = _llama3_chat(msgs)
    left, right = context.split(path)
    p = len(tok.tokenize(left))
    ids = [tok.bos_token_id] + tok(left + transcription + right, add_special_tokens=False)["input_ids"]
    # the published prepare_llm_input: cat([embeds[:p], audio(64), embeds[p:]]) -- tags: -1 marks audio rows
    seq = ids[:p] + [-1] * 64 + ids[p:]
    got = desta2_audio_positions(p, 64)
    assert got == [i for i, t in enumerate(seq) if t == -1]
    left_ids = tok(left, add_special_tokens=False)["input_ids"]
    assert seq[got[-1] + 1] == left_ids[-1]  # the left text's last token comes after the audio
    assert seq[: got[0]] == [tok.bos_token_id] + left_ids[:-1]


def test_desta25_positions_split_audio_and_transcription(tok):
    """DeSTA2.5-Audio: each <|AUDIO|> locator becomes prompt_size + len(transcription) placeholders (the
    published _prepare_audio_context_and_start_positions); the first prompt_size are audio."""
    from interventions.specs_remote import desta25_audio_positions

    loc = tok.convert_tokens_to_ids("<|AUDIO|>")
    ph = tok.convert_tokens_to_ids("<|reserved_special_token_87|>")
    text = _llama3_chat([{"role": "user", "content": "<|AUDIO|>\nDescribe. <|AUDIO|><|AUDIO|> Compare."}])
    token_list = tok(text, add_special_tokens=False)["input_ids"]
    trans = [3, 0, 5]
    # the published expansion, written out independently
    result, starts, t_left = [], [], list(trans)
    for x in token_list:
        if x == loc:
            starts.append(len(result))
            result.extend([ph] * (8 + t_left.pop(0)))
        else:
            result.append(x)
    audio, tr = desta25_audio_positions(result, ph, trans, prompt_size=8)
    assert audio == [s + k for s in starts for k in range(8)]
    assert tr == [s + 8 + k for s, t in zip(starts, trans) for k in range(t)]
    assert sorted(audio + tr) == [i for i, t in enumerate(result) if t == ph]
    with pytest.raises(ValueError, match="expected 13 placeholders"):
        desta25_audio_positions(result, ph, [5, 0, 5], prompt_size=8)


def test_gemma3n_spec_resolves_on_the_real_text_model():
    """Gemma 3n's spec resolves on the real Gemma3nTextModel, whose blocks return AltUp's stacked residual
    streams: the spec names the residual stream among them (run end to end in tests/test_specs_more.py)."""
    from transformers import Gemma3nTextConfig
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nTextModel

    from interventions.specs import spec_for_config

    tc = Gemma3nTextConfig(vocab_size=V, vocab_size_per_layer_input=V, hidden_size=D, hidden_size_per_layer_input=8,
                           intermediate_size=2 * D, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2,
                           head_dim=D // H, layer_types=["sliding_attention", "full_attention"], sliding_window=8,
                           num_kv_shared_layers=0, activation_sparsity_pattern=[0.0] * L, altup_num_inputs=2,
                           laurel_rank=4)
    root = nn.Module()
    root.model = nn.Module()
    root.model.language_model = Gemma3nTextModel(tc).eval()
    root.lm_head = nn.Linear(D, V, bias=False)
    root.config = SimpleNamespace(model_type="gemma3n", text_config=tc, audio_token_id=V - 1)
    spec = spec_for_config(root.config)
    assert spec.name == "gemma3n" and spec.not_run_reason is None and not spec.remote_code
    assert spec.num_layers(root) == L and len(spec.layer_modules(root)) == L and spec.head_dim(root) == D // H
    assert spec.embed_module(root) is root.model.language_model.embed_tokens
    assert spec.o_proj_module(root, 1).in_features == H * (D // H)
    assert spec.audio_token_id(root) == V - 1
    seen = []
    h = spec.layer_modules(root)[0].register_forward_hook(lambda m, a, o: seen.append(tuple(o.shape)))
    try:
        with torch.no_grad():
            root.model.language_model(input_ids=torch.tensor([[1, 2, 3]]))
    finally:
        h.remove()
    assert seen == [(2, 1, 3, D)]  # altup_num_inputs stacked streams, not one (B, T, d) residual stream
    assert spec.residual_index(root) == tc.altup_active_idx == 0
