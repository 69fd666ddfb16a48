"""What the engine needs for decoders that are more than "embeddings -> blocks -> norm -> lm_head".

Every function here is driven by typed :class:`~interventions.specs.ArchSpec` fields (no per-model branch):

* ``residual_stream_attr``: blocks that return several stacked residual streams ([K, B, T, d], Gemma 3n's
  AltUp); "the residual stream after block l" is the stream at that index (:func:`residual_of`, :func:`with_residual`);
* ``lens_readout``: how the model un-stacks its streams before the final norm (:func:`lens_state`);
* ``logit_softcap_attr``: final logit soft-capping (:func:`softcap`);
* ``token_embedder`` / ``decoder_token_inputs``: how token ids become embeddings (``ArchSpec.embed_ids``), and
  extra decoder inputs read from the token ids themselves (:func:`decoder_token_kwargs`);
* ``stub_sub_configs``: towers the loader builds as empty stand-ins (:func:`stub_towers`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

__all__ = ["residual_of", "with_residual", "lens_state", "softcap", "decoder_token_kwargs",
           "stub_towers"]


def residual_of(index: int | None, output: torch.Tensor) -> torch.Tensor:
    """The residual stream in a block's hidden output (``index`` None: the output itself)."""
    return output if index is None else output[index]


def with_residual(index: int | None, output: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """A block's hidden output with its residual stream replaced by ``h`` (a new tensor)."""
    if index is None:
        return h
    out = output.clone()
    out[index] = h
    return out


def lens_state(spec: Any, model: torch.nn.Module, entry: torch.Tensor, index: Any) -> torch.Tensor:
    """The pre-norm state the lens reads from one ``hidden_states`` entry at ``index`` (positions of a
    [B, T, d] state): the entry itself, or the model's own un-stacking of its stacked streams."""
    if spec.lens_readout is None:
        return entry[index]
    idx = index if isinstance(index, tuple) else (index,)
    return spec.lens_readout(model, entry[(slice(None),) + idx])


def softcap(spec: Any, model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """``c * tanh(logits / c)`` with ``c`` the spec's soft-capping attribute of the text config (unchanged
    logits when the spec names none or the config's value is None)."""
    if not spec.logit_softcap_attr:
        return logits
    c = getattr(spec.text_cfg(model), spec.logit_softcap_attr, None)
    return logits if c is None else torch.tanh(logits / c) * c


def decoder_token_kwargs(spec: Any, model: torch.nn.Module, input_ids: torch.Tensor | None) -> dict[str, Any]:
    """Extra decoder inputs computed from the token ids of the positions a pass runs (empty when the spec
    needs none).  ValueError when the spec needs them and no ids were given (a pass on bare embeddings)."""
    if spec.decoder_token_inputs is None:
        return {}
    if input_ids is None:
        raise ValueError(f"architecture {spec.name!r} reads the token ids of every decoder pass "
                         "(decoder_token_inputs); pass input_ids= with inputs_embeds=")
    return dict(spec.decoder_token_inputs(model, input_ids))


@contextmanager
def stub_towers(spec: Any, config: Any) -> Iterator[None]:
    """While open, ``AutoModel.from_config`` builds an empty stand-in for each sub-config the spec names in
    ``stub_sub_configs`` (the model's own constructor, and so ``from_pretrained``, then never builds that
    tower; its checkpoint weights are reported as unused).  The previous registrations are restored on exit."""
    if not spec.stub_sub_configs:
        yield
        return
    from transformers import AutoModel, PreTrainedModel

    mapping: Any = AutoModel._model_mapping  # pyright: ignore[reportAttributeAccessIssue]
    extra = mapping._extra_content
    saved: dict[Any, Any] = {}
    for name in spec.stub_sub_configs:
        cfg_cls = type(getattr(config, name))
        if cfg_cls in saved:
            continue
        saved[cfg_cls] = extra.get(cfg_cls)

        def forward(self, *a, _name=name, **k):
            raise NotImplementedError(f"{spec.name}: the {_name} tower is not built (audio-only use, see the spec)")

        def init(self, cfg):
            PreTrainedModel.__init__(self, cfg)
            self.post_init()

        stub = type(f"Unused{cfg_cls.__name__}Tower", (PreTrainedModel,),
                    {"config_class": cfg_cls, "base_model_prefix": "unused", "__init__": init, "forward": forward,
                     "_init_weights": lambda self, module: None})
        extra[cfg_cls] = stub
    try:
        yield
    finally:
        for cfg_cls, old in saved.items():
            if old is None:
                extra.pop(cfg_cls, None)
            else:
                extra[cfg_cls] = old
