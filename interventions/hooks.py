"""Hook context managers: capture, add to, replace and mask states, driven by architecture specs.

All hooks are removed on exit, also on error.  Residual-stream hooks are registered with
``prepend=True`` so that they run before transformers' own hidden-state capture hooks: an edit made
here is what ``output_hidden_states`` reports.  Hooks on the same module compose in a defined order: each new
prepend hook is put in front, so the innermost ``with`` statement's hook runs first and the outermost one's last
(an outer ``replace`` wins over an inner ``delta``; ``tests/test_hooks.py`` checks the order).

Positions are per row of a left-padded batch: ``positions`` is a LongTensor (B,) of indices into the
padded sequence (``-1``/``T-1`` is the last prompt position of every row with left padding).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch

from . import arch_extras
from .arch_spec import ArchSpec

__all__ = [
    "stop_after",
    "layer_hook",
    "capture_residual",
    "edit_residual",
    "capture_head_inputs",
    "edit_attention_output",
    "mask_attention",
    "eager_attention",
]

Edit = Callable[[torch.Tensor], torch.Tensor | None]


def _hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output: Any, h: torch.Tensor) -> Any:
    return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h


@contextmanager
def layer_hook(model: torch.nn.Module, spec: ArchSpec, layer: int, fn: Edit) -> Iterator[None]:
    """Call ``fn(hidden)`` on the output of decoder block ``layer`` (1..L); a returned tensor
    replaces the output.  Where a block returns several stacked streams (``ArchSpec.residual_stream_attr``),
    ``hidden`` is the residual stream among them and a returned tensor replaces that stream only."""
    L = spec.num_layers(model)
    if not 1 <= layer <= L:
        raise ValueError(f"layer {layer} out of range 1..{L}")
    mod = spec.layer_modules(model)[layer - 1]
    stream = spec.residual_index(model)  # blocks returning stacked streams: the residual stream's index

    def hook(_m, _inp, output):
        hidden = _hidden_of(output)
        new = fn(arch_extras.residual_of(stream, hidden))
        return None if new is None else _with_hidden(output, arch_extras.with_residual(stream, hidden, new))

    handle = mod.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _many(cms: Sequence[Any]) -> Iterator[None]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        for cm in cms:
            stack.enter_context(cm)
        yield


@contextmanager
def capture_residual(model: torch.nn.Module, spec: ArchSpec, layers: Sequence[int],
                     positions: torch.Tensor | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Capture the residual stream after the given layers.  With ``positions`` (B,), only
    ``h[b, positions[b]]`` is kept (shape (B, d)); otherwise the full (B, T, d) output."""
    store: dict[int, torch.Tensor] = {}

    def make(l: int) -> Edit:
        def fn(h: torch.Tensor) -> None:
            if positions is None:
                store[l] = h.detach()
            else:
                store[l] = h[torch.arange(h.shape[0], device=h.device), positions.to(h.device)].detach()
            return None

        return fn

    with _many([layer_hook(model, spec, l, make(l)) for l in layers]):
        yield store


@contextmanager
def edit_residual(model: torch.nn.Module, spec: ArchSpec, layer: int, positions: torch.Tensor,
                  delta: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
                  replace: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
                  row_mask: torch.Tensor | None = None) -> Iterator[None]:
    """Add ``delta`` (B, d) to, or ``replace`` (B, d) the residual after ``layer`` at ``positions``.

    ``delta`` may be a callable receiving the current states at those positions (B, d) and
    returning the addition (used when the addition depends on this very pass); ``replace`` may be a
    callable receiving them and returning the new states.  Rows where ``row_mask`` is False are left untouched.
    """

    def fn(h: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(h.shape[0], device=h.device)
        pos = positions.to(h.device)
        cur = h[rows, pos]
        if replace is not None:
            new = (replace(cur) if callable(replace) else replace).to(h.dtype).to(h.device)
        else:
            d = delta(cur) if callable(delta) else delta
            assert d is not None, "give delta or replace"
            new = cur + d.to(h.dtype).to(h.device)
        if row_mask is not None:
            m = row_mask.to(h.device)[:, None]
            new = torch.where(m, new, cur)
        h = h.clone()
        h[rows, pos] = new
        return h

    with layer_hook(model, spec, layer, fn):
        yield


@contextmanager
def capture_head_inputs(model: torch.nn.Module, spec: ArchSpec, layers: Sequence[int],
                        positions: torch.Tensor) -> Iterator[dict[int, torch.Tensor]]:
    """Per-head attention outputs *before* the output projection at ``positions``:
    ``store[l]`` has shape (B, H, head_dim)."""
    H, D = spec.num_heads(model), spec.head_dim(model)
    store: dict[int, torch.Tensor] = {}
    handles = []

    def make(l: int):
        def pre(_m, args):
            x = args[0]
            rows = torch.arange(x.shape[0], device=x.device)
            store[l] = x[rows, positions.to(x.device)].detach().reshape(x.shape[0], H, D)

        return pre

    try:
        for l in layers:
            handles.append(spec.o_proj_module(model, l).register_forward_pre_hook(make(l), prepend=True))
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def edit_attention_output(model: torch.nn.Module, spec: ArchSpec, layer: int, positions: torch.Tensor,
                          fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Add ``fn(head_inputs (B,H,D), o_proj_weight (d, H*D)) -> (B, d)`` to the attention
    sublayer's output of ``layer`` at ``positions`` (i.e. to the residual right after attention,
    before the MLP).  ``head_inputs`` are the per-head outputs of this very pass."""
    H, D = spec.num_heads(model), spec.head_dim(model)
    o_proj = spec.o_proj_module(model, layer)

    def hook(_m, args, output):
        x = args[0]
        rows = torch.arange(x.shape[0], device=x.device)
        pos = positions.to(x.device)
        heads = x[rows, pos].reshape(x.shape[0], H, D)
        add = fn(heads, o_proj.weight)
        out = output.clone()
        out[rows, pos] = out[rows, pos] + add.to(out.dtype)
        return out

    handle = o_proj.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def mask_attention(model: torch.nn.Module, spec: ArchSpec, attention_mask_2d: torch.Tensor,
                   query_positions: torch.Tensor, key_mask: torch.Tensor,
                   layers: Sequence[int] | None = None) -> Iterator[None]:
    """Block attention from ``query_positions[b]`` to the keys where ``key_mask[b]`` is True
    (e.g. the audio positions), in every layer (or ``layers``).  Other queries are unaffected.

    Works with eager (additive float masks) and sdpa (boolean masks) attention; the full causal +
    padding mask is rebuilt from ``attention_mask_2d`` so that it also works when transformers
    passes no mask (pure causal case), restricted to the window in sliding-window layers.
    """
    L = spec.num_layers(model)
    layers = list(range(1, L + 1)) if layers is None else list(layers)
    impl = getattr(spec.text_cfg(model), "_attn_implementation", "eager")
    if impl not in ("eager", "sdpa"):
        raise ValueError(f"attention masking needs eager or sdpa attention, the model uses {impl!r}")
    B, T = attention_mask_2d.shape
    dev = attention_mask_2d.device
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    allowed = causal[None, None] & attention_mask_2d.bool()[:, None, None, :]
    rows = torch.arange(B, device=dev)
    q = query_positions.to(dev)
    allowed[rows, 0, q, :] &= ~key_mask.to(dev).bool()
    idx = torch.arange(T, device=dev)

    def layer_mask(window: int | None) -> torch.Tensor:
        # A sliding-window layer (its attention module's ``sliding_window``) sees keys with q - k < window only.
        a = allowed if not window else allowed & ((idx[:, None] - idx[None, :]) < int(window))[None, None]
        # Rows that are pure padding must keep at least one key to avoid NaNs.
        return a | ((~a.any(-1, keepdim=True)) & torch.eye(T, dtype=torch.bool, device=dev)[None, None])

    def make(a: torch.Tensor):
        def pre(_m, args, kwargs):
            ref = kwargs.get("hidden_states", args[0] if args else None)
            if impl == "eager":
                m = torch.zeros(a.shape, dtype=ref.dtype, device=dev)
                m = m.masked_fill(~a, torch.finfo(ref.dtype).min)
            else:
                m = a
            kwargs["attention_mask"] = m
            return args, kwargs

        return pre

    handles = []
    by_window: dict[int | None, Any] = {}  # one mask per distinct window
    try:
        for l in layers:
            mod = spec.attn_module(model, l)
            window = getattr(mod, "sliding_window", None) or None
            if window not in by_window:
                by_window[window] = make(layer_mask(window))
            handles.append(mod.register_forward_pre_hook(by_window[window], with_kwargs=True, prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def eager_attention(model: torch.nn.Module, spec: ArchSpec) -> Iterator[None]:
    """Temporarily switch the text model to eager attention (attention weights need it)."""
    cfg = spec.text_cfg(model)
    old = getattr(cfg, "_attn_implementation", None)
    if old == "eager":
        yield
        return
    model.set_attn_implementation({spec.text_config: "eager"})
    try:
        yield
    finally:
        model.set_attn_implementation({spec.text_config: old})


class _StopForward(Exception):
    pass


@contextmanager
def stop_after(model: torch.nn.Module, spec: ArchSpec, layer: int) -> Iterator[None]:
    """Abort the forward pass right after decoder block ``layer`` (the rest is not computed).

    Used for auxiliary passes that only need states up to some layer (e.g. the silence pass of
    steering): ``with stop_after(m, s, l): engine.run(prep)`` returns normally without outputs.
    """
    mod = spec.layer_modules(model)[layer - 1]

    def hook(_m, _i, _o):
        raise _StopForward

    handle = mod.register_forward_hook(hook)  # appended: runs after capture hooks of this layer
    try:
        yield
    except _StopForward:
        pass
    finally:
        handle.remove()
