"""interventions.hooks on the tiny Qwen2-Audio model, against plain ``register_forward_hook`` references.

The model is loaded with transformers directly (no engine, no lm-eval object) and run on text-only input ids;
every reference is taken from the model's own ``output_hidden_states`` or from hooks registered by hand on the
module paths of the checkpoint (``model.language_model.layers.N``), not through the architecture spec.
"""

from __future__ import annotations

import pytest
import torch

from interventions import hooks
from interventions.specs import spec_for_config

IDS = torch.tensor([[11, 25, 37, 49, 61, 73, 85], [90, 14, 28, 42, 56, 70, 84]])
POS = torch.tensor([6, 4])  # one position per row (different rows, different positions)
ROWS = torch.arange(2)


@pytest.fixture(scope="module")
def tiny(tiny_qwen2_audio_dir):
    from transformers import Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(tiny_qwen2_audio_dir)).eval()
    return model, spec_for_config(model.config)


def _layer(model, l: int) -> torch.nn.Module:
    """Decoder block ``l`` (1-based) by its checkpoint path, independent of the spec."""
    return model.get_submodule(f"model.language_model.layers.{l - 1}")


def _o_proj(model, l: int) -> torch.nn.Module:
    return model.get_submodule(f"model.language_model.layers.{l - 1}.self_attn.o_proj")


def _run(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _raw_add(model, l: int, add: torch.Tensor):
    """Reference: add ``add[b]`` to the output of block ``l`` at ``POS[b]`` with a hand-made forward hook."""

    def hook(_m, _i, out):
        h = (out[0] if isinstance(out, tuple) else out).clone()
        h[ROWS, POS] = h[ROWS, POS] + add
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    return _layer(model, l).register_forward_hook(hook, prepend=True)


def test_spec_layers_are_the_checkpoint_blocks(tiny):
    model, spec = tiny
    assert spec.num_layers(model) == 4
    assert all(m is _layer(model, l) for l, m in enumerate(spec.layer_modules(model), start=1))


def test_capture_residual_equals_hidden_states_and_raw_hooks(tiny):
    model, spec = tiny
    base = _run(model)
    raw: dict[int, torch.Tensor] = {}
    handle = _layer(model, 4).register_forward_hook(lambda _m, _i, o: raw.__setitem__(4, o.detach().clone()))
    try:
        with hooks.capture_residual(model, spec, [1, 2, 3, 4]) as full:
            _run(model)
        with hooks.capture_residual(model, spec, [2, 4], positions=POS) as at:
            _run(model)
    finally:
        handle.remove()
    for l in (1, 2, 3):  # hidden_states[l] is the output of block l (the last entry is after the final norm)
        assert torch.equal(full[l], base.hidden_states[l])
    assert torch.equal(full[4], raw[4])
    assert not torch.equal(full[4], base.hidden_states[4])  # so the block-4 check above is not the normed state
    assert sorted(at) == [2, 4] and at[2].shape == (2, 64)
    assert torch.equal(at[2], base.hidden_states[2][ROWS, POS])
    assert torch.equal(at[4], raw[4][ROWS, POS])


def test_edit_residual_adds_exactly_the_vector_at_that_layer_and_is_removed(tiny):
    model, spec = tiny
    before = _n_hooks(model)
    base = _run(model)
    delta = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    with hooks.edit_residual(model, spec, 2, POS, delta=delta):
        assert _n_hooks(model) == before + 1
        got = _run(model)
    assert _n_hooks(model) == before
    h_ref = _raw_add(model, 2, delta)
    try:
        ref = _run(model)
    finally:
        h_ref.remove()
    assert torch.equal(got.logits, ref.logits)  # the same edit as a hand-made hook, bit for bit
    assert not torch.allclose(got.logits, base.logits)
    assert torch.equal(got.hidden_states[1], base.hidden_states[1])  # earlier layer untouched
    diff = got.hidden_states[2] - base.hidden_states[2]
    torch.testing.assert_close(diff[ROWS, POS], delta, rtol=0, atol=1e-5)  # output_hidden_states sees the edit
    other = torch.ones(2, 7, dtype=torch.bool)
    other[ROWS, POS] = False
    assert torch.equal(diff[other], torch.zeros_like(diff[other]))  # other positions unchanged
    assert torch.equal(_run(model).logits, base.logits)  # removed: outputs back to bit-identical


def test_edit_residual_replace_callable_delta_and_row_mask(tiny):
    model, spec = tiny
    base = _run(model)
    cur = base.hidden_states[3][ROWS, POS]
    new = torch.full((2, 64), 0.25)
    with hooks.edit_residual(model, spec, 3, POS, replace=new):
        rep = _run(model)
    assert torch.equal(rep.hidden_states[3][ROWS, POS], new)
    seen: list[torch.Tensor] = []

    def half(h: torch.Tensor) -> torch.Tensor:
        seen.append(h.clone())
        return 0.5 * h

    with hooks.edit_residual(model, spec, 3, POS, delta=half):
        dyn = _run(model)
    assert torch.equal(seen[0], cur)  # the callable receives this pass's states at POS
    torch.testing.assert_close(dyn.hidden_states[3][ROWS, POS], 1.5 * cur, rtol=1e-6, atol=1e-6)
    with hooks.edit_residual(model, spec, 3, POS, replace=new, row_mask=torch.tensor([False, True])):
        masked = _run(model)
    assert torch.equal(masked.logits[0], base.logits[0])  # the masked-out row is untouched
    assert torch.equal(masked.hidden_states[3][1, POS[1]], new[1])


def test_layer_hook_none_keeps_output_and_bad_layer_names_the_range(tiny):
    model, spec = tiny
    base = _run(model)
    calls: list[tuple[int, ...]] = []
    with hooks.layer_hook(model, spec, 1, lambda h: calls.append(tuple(h.shape))):
        out = _run(model)
    assert calls == [(2, 7, 64)] and torch.equal(out.logits, base.logits)
    for bad in (0, 5):
        with pytest.raises(ValueError, match=rf"layer {bad} out of range 1\.\.4"):
            with hooks.layer_hook(model, spec, bad, lambda h: None):
                pass


def test_hooks_are_removed_on_error(tiny):
    model, spec = tiny
    base = _run(model)
    before = _n_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.edit_residual(model, spec, 2, POS, delta=torch.ones(2, 64)):
            with hooks.capture_residual(model, spec, [1, 3]):
                assert _n_hooks(model) == before + 3
                raise RuntimeError("boom")
    assert _n_hooks(model) == before
    assert torch.equal(_run(model).logits, base.logits)


def test_capture_head_inputs_are_the_o_proj_inputs(tiny):
    model, spec = tiny
    raw: dict[int, torch.Tensor] = {}
    handle = _o_proj(model, 2).register_forward_pre_hook(lambda _m, a: raw.__setitem__(2, a[0].detach().clone()))
    try:
        with hooks.capture_head_inputs(model, spec, [2], POS) as store:
            _run(model)
    finally:
        handle.remove()
    assert store[2].shape == (2, 4, 16)  # (B, heads, head_dim)
    assert torch.equal(store[2].reshape(2, 64), raw[2][ROWS, POS])
    assert torch.equal(store[2][:, 1], raw[2][ROWS, POS][:, 16:32])  # head 1 is the second head_dim slice


def test_edit_attention_output_matches_a_raw_o_proj_hook(tiny):
    model, spec = tiny
    add = torch.randn(64, generator=torch.Generator().manual_seed(1))
    got_args: list[tuple[torch.Tensor, torch.Tensor]] = []

    def fn(heads: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        got_args.append((heads.clone(), w))
        return add.expand(heads.shape[0], -1)

    with hooks.capture_head_inputs(model, spec, [3], POS) as cap:
        _run(model)
    with hooks.edit_attention_output(model, spec, 3, POS, fn):
        got = _run(model)

    def ref_hook(_m, _a, out):
        out = out.clone()
        out[ROWS, POS] = out[ROWS, POS] + add
        return out

    handle = _o_proj(model, 3).register_forward_hook(ref_hook)
    try:
        ref = _run(model)
    finally:
        handle.remove()
    assert torch.equal(got.logits, ref.logits)
    heads, w = got_args[0]
    assert torch.equal(heads, cap[3]) and w is _o_proj(model, 3).weight
    assert torch.equal(got.hidden_states[2], _run(model).hidden_states[2])


@pytest.mark.parametrize("eager", [False, True])
def test_mask_attention_isolating_the_last_query_equals_that_token_alone(tiny, eager):
    """Blocking every other key for the last query in every layer leaves it attending to itself only, so its
    logits are those of a forward pass over that single token; earlier queries are unaffected."""
    model, spec = tiny
    ids = IDS[:1]
    base = _run(model, ids)
    alone = _run(model, ids[:, -1:]).logits[0, -1]
    key_mask = torch.ones(1, 7, dtype=torch.bool)
    key_mask[0, -1] = False
    cfg = spec.text_cfg(model)
    impl = cfg._attn_implementation
    with hooks.eager_attention(model, spec) if eager else _null():
        assert cfg._attn_implementation == ("eager" if eager else impl)
        with hooks.mask_attention(model, spec, torch.ones_like(ids), torch.tensor([6]), key_mask):
            masked = _run(model, ids)
    assert cfg._attn_implementation == impl  # eager_attention restores the implementation
    torch.testing.assert_close(masked.logits[0, -1], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(base.logits[0, -1], alone, atol=1e-3)
    torch.testing.assert_close(masked.logits[0, :-1], base.logits[0, :-1], rtol=1e-4, atol=1e-5)
    assert torch.equal(_run(model, ids).logits, base.logits)


def _null():
    from contextlib import nullcontext

    return nullcontext()


def test_stop_after_skips_the_later_blocks(tiny):
    model, spec = tiny
    base = _run(model)
    later: list[int] = []
    handle = _layer(model, 3).register_forward_hook(lambda *_: later.append(3))
    reached = False
    try:
        with hooks.capture_residual(model, spec, [2]) as cap:
            with hooks.stop_after(model, spec, 2):
                _run(model)
                reached = True
    finally:
        handle.remove()
    assert not reached and later == []  # the forward was cut after block 2 and the exception swallowed
    assert torch.equal(cap[2], base.hidden_states[2])  # states up to that block are still captured
    assert torch.equal(_run(model).logits, base.logits)


def test_nested_hooks_on_one_block_run_innermost_first(tiny):
    """The documented order: the innermost ``with`` runs first, so an outer ``replace`` wins over an inner
    ``delta``, and an inner ``replace`` followed by an outer ``delta`` gives replace + delta."""
    model, spec = tiny
    g = torch.Generator().manual_seed(3)
    delta, value = torch.randn(2, 64, generator=g), torch.randn(2, 64, generator=g)
    with hooks.edit_residual(model, spec, 2, POS, replace=value):
        with hooks.edit_residual(model, spec, 2, POS, delta=delta):
            outer_replace = _run(model).hidden_states[2][ROWS, POS]
    with hooks.edit_residual(model, spec, 2, POS, delta=delta):
        with hooks.edit_residual(model, spec, 2, POS, replace=value):
            outer_delta = _run(model).hidden_states[2][ROWS, POS]
    torch.testing.assert_close(outer_replace, value, rtol=0, atol=1e-6)
    torch.testing.assert_close(outer_delta, value + delta, rtol=0, atol=1e-5)
