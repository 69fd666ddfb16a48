"""The inference-time interventions, exactly as the papers define them.

Each intervention is a dataclass; ``apply(engine, prep, toks, positions)`` installs its hooks for
the next audio pass and returns a removable handle; ``applied(...)`` is the context-manager form.
Interventions needing the matched-duration silence run do that pass inside ``apply`` (the silence
encoder output is cached per clip length by the engine).

Every formula is computed by :mod:`interventions.formulas` (grep the equation number there).

* ``enrich`` (AudioLens enrichment): at the last prompt position, h^(l+gap) <- h^(l+gap) + lam * h^(l),
  within the same forward pass.
* ``layer_guided`` (steering paper Sec. 4.2): d(x) = sum_l w_l (h_l^audio - h_l^silence) at the
  final prompt position, w_l = (#specialist heads in l) / K; the final-layer representation (the
  output of the last decoder block, before the final norm) becomes h_L + alpha * d(x).
* ``single_layer``: the same with one layer (w = 1).
* ``head`` (Sec. 4.3): per specialist head (l, h), delta = head output before o_proj (audio -
  silence) at the final position, both from unsteered passes (as the paper caches them), mapped through that
  head's slice of o_proj and added, times alpha, to the residual right after layer l's attention sublayer.

Layers are 1..L (output of decoder block l); heads are (layer, head) pairs.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable

import torch

from . import formulas, hooks
from .formulas import layer_weights

if TYPE_CHECKING:
    from .engine import Engine, Prepared, Tokenized

__all__ = ["Intervention", "Handle", "NoIntervention", "Enrich", "LayerGuided", "HeadSteer", "layer_weights"]


@runtime_checkable
class Intervention(Protocol):
    """What :func:`interventions.scoring.score_items` (and generation) may use of an intervention.

    ``applied(engine, prep, toks, positions)`` installs its hooks for the next decoder pass over ``prep`` and
    removes them on exit: ``prep`` is the batch (:class:`~interventions.engine.Prepared`), ``toks`` the
    tokenized prompts (for auxiliary passes such as matched-duration silence), ``positions`` (B,) the row
    positions to act at (``-1``: the last prompt position, docs/CONTRACTS.md).  ``name == "none"`` means no
    intervention; ``unsteered_aux_pass`` asks for the split path (context once, last position per pass).
    """

    name: str
    unsteered_aux_pass: bool

    def applied(self, engine: Engine, prep: Prepared, toks: Sequence[Tokenized],
                positions: torch.Tensor) -> AbstractContextManager[None]: ...

    def describe(self) -> dict[str, Any]: ...


class Handle:
    """Removable handle returned by ``apply``."""

    def __init__(self, stack: ExitStack):
        self._stack = stack

    def remove(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class _Base:
    name = "none"
    needs_silence = False
    # True: the intervention also runs an unsteered pass over the same prompt (head steering caches
    # the unsteered head outputs).  Scoring then runs the prompt's context once and both passes over
    # the last position only; otherwise one pass over the whole prompt is cheaper.
    unsteered_aux_pass = False

    def install(self, engine, prep, toks, positions, stack: ExitStack) -> None:  # pragma: no cover
        raise NotImplementedError

    def apply(self, engine, prep, toks, positions) -> Handle:
        stack = ExitStack()
        try:
            self.install(engine, prep, toks, positions, stack)
        except BaseException:
            stack.close()
            raise
        return Handle(stack)

    @contextmanager
    def applied(self, engine, prep, toks, positions) -> Iterator[None]:
        h = self.apply(engine, prep, toks, positions)
        try:
            yield
        finally:
            h.remove()

    def describe(self) -> dict[str, Any]:
        return {"steer": self.name}


@dataclass
class NoIntervention(_Base):
    """No intervention (the unsteered model)."""
    name: str = "none"

    def install(self, engine, prep, toks, positions, stack):
        return None


@dataclass
class Enrich(_Base):
    """AudioLens enrichment: add ``lam`` times layer l's residual to layer l+gap at the last position."""
    source_layer: int
    lam: float
    gap: int = 5
    name: str = "enrich"

    @property
    def target_layer(self) -> int:
        return self.source_layer + self.gap

    def install(self, engine, prep, toks, positions, stack):
        L = engine.num_layers
        if not (1 <= self.source_layer and self.target_layer <= L):
            raise ValueError(f"enrich: source layer {self.source_layer} + gap {self.gap} must lie in 1..{L}")
        m, s = engine.model, engine.spec
        if self.gap == 0:
            stack.enter_context(hooks.edit_residual(m, s, self.target_layer, positions,
                                                    delta=lambda cur: formulas.enrich_delta(cur, self.lam)))
            return
        store = stack.enter_context(hooks.capture_residual(m, s, [self.source_layer], positions))
        stack.enter_context(hooks.edit_residual(
            m, s, self.target_layer, positions,
            delta=lambda cur: formulas.enrich_delta(store[self.source_layer], self.lam)))

    def describe(self):
        return {"steer": self.name, "source_layer": self.source_layer, "gap": self.gap, "lam": self.lam}


def _partial_pass(engine, prep, positions, layers=(), head_layers=()):
    """An unsteered pass that stops after the deepest layer it needs; captures residuals / head inputs."""
    deepest = max(list(layers) + list(head_layers))
    with ExitStack() as st:
        res = st.enter_context(hooks.capture_residual(engine.model, engine.spec, list(layers), positions))
        heads = st.enter_context(hooks.capture_head_inputs(engine.model, engine.spec, list(head_layers), positions))
        with hooks.stop_after(engine.model, engine.spec, deepest):
            engine.run(prep)
    return res, heads


def _silence_pass(engine, toks, positions, layers=(), head_layers=()):
    """The unsteered matched-duration silence pass (stops after the deepest layer needed)."""
    return _partial_pass(engine, engine.prepare(toks, silence=True), positions, layers, head_layers)


@dataclass
class LayerGuided(_Base):
    """Layer-guided steering (Sec. 4.2): add alpha times the weighted audio-minus-silence direction."""
    weights: dict[int, float]
    alpha: float
    name: str = "layer_guided"
    heads: list[tuple[int, int]] = field(default_factory=list)
    needs_silence = True

    def install(self, engine, prep, toks, positions, stack):
        L = engine.num_layers
        bad = [l for l in self.weights if not 1 <= l <= L]
        if bad:
            raise ValueError(f"{self.name}: layers {bad} out of range 1..{L}")
        layers = sorted(self.weights)
        sil, _ = _silence_pass(engine, toks, positions, layers=layers)
        m, s = engine.model, engine.spec
        earlier = [l for l in layers if l < L]
        store = stack.enter_context(hooks.capture_residual(m, s, earlier, positions))

        def steer(cur: torch.Tensor) -> torch.Tensor:
            audio = {l: (cur if l == L else store[l]) for l in self.weights}
            d = formulas.layer_guided_direction(self.weights, audio, sil)
            return formulas.final_layer_steering(cur, d, self.alpha)

        stack.enter_context(hooks.edit_residual(m, s, L, positions, replace=steer))

    def describe(self):
        return {"steer": self.name, "alpha": self.alpha, "weights": {str(k): v for k, v in self.weights.items()},
                "heads": [list(h) for h in self.heads]}


@dataclass
class HeadSteer(_Base):
    """Head steering (Sec. 4.3): add each specialist head's audio-minus-silence delta after its layer's attention."""
    heads: list[tuple[int, int]]
    alpha: float
    name: str = "head"
    needs_silence = True
    unsteered_aux_pass = True

    def install(self, engine, prep, toks, positions, stack):
        L, H = engine.num_layers, engine.spec.num_heads(engine.model)
        bad = [h for h in self.heads if not (1 <= h[0] <= L and 0 <= h[1] < H)]
        if bad:
            raise ValueError(f"head: heads {bad} out of range (layers 1..{L}, heads 0..{H - 1})")
        by_layer: dict[int, list[int]] = defaultdict(list)
        for l, h in self.heads:
            by_layer[int(l)].append(int(h))
        _, sil = _silence_pass(engine, toks, positions, head_layers=sorted(by_layer))
        # Per-head outputs of the *unsteered* audio pass (the paper caches them): an edit in an
        # earlier specialist layer must not change the delta of a later one.
        _, aud = _partial_pass(engine, prep, positions, head_layers=sorted(by_layer))
        D = engine.spec.head_dim(engine.model)
        for l, hs in by_layer.items():
            def fn(_heads_now: torch.Tensor, W: torch.Tensor, l=l, hs=hs) -> torch.Tensor:
                return formulas.head_steering_update(aud[l], sil[l], W, hs, D, self.alpha)

            stack.enter_context(hooks.edit_attention_output(engine.model, engine.spec, l, positions, fn))

    def describe(self):
        return {"steer": self.name, "alpha": self.alpha, "heads": [list(h) for h in self.heads]}


@dataclass
class RandomEnrich(_Base):
    """AudioLens' control: for each sample a random source layer (uniform over 1..L-gap), drawn
    deterministically from (seed, clip content) so batching does not change it."""

    lam: float
    gap: int
    seed: int
    num_layers: int
    name: str = "enrich"

    def layer_for(self, key: str) -> int:
        import hashlib

        h = int(hashlib.sha256(f"{self.seed}:{key}".encode()).hexdigest()[:12], 16)
        return 1 + h % (self.num_layers - self.gap)

    def install(self, engine, prep, toks, positions, stack):
        from .engine import clip_key

        srcs = torch.tensor([self.layer_for("|".join(clip_key(c) for c in t.clips) or str(t.input_ids.tolist()))
                             for t in toks])
        m, s = engine.model, engine.spec
        for src in sorted(set(srcs.tolist())):
            rows = srcs == src
            store = stack.enter_context(hooks.capture_residual(m, s, [src], positions))
            stack.enter_context(hooks.edit_residual(
                m, s, src + self.gap, positions, row_mask=rows,
                delta=lambda cur, st=store, l=src: formulas.enrich_delta(st[l], self.lam)))

    def describe(self):
        return {"steer": "enrich", "control": "random", "lam": self.lam, "gap": self.gap, "seed": self.seed}
