"""``loglikelihood_rolling`` for ``audio_lalm``: text only, lm-eval's rolling windows over the decoder."""

from __future__ import annotations

from typing import Any, Sequence

from tqdm import tqdm

__all__ = ["rolling_loglikelihood"]


def rolling_loglikelihood(engine: Any, requests: Sequence[Any], *, prefix_token: int, max_length: int,
                          cache_hook: Any = None, disable: bool = False) -> list[float]:
    """Per request, the summed log-likelihood of its text over lm-eval's disjoint rolling windows
    (``get_rolling_token_windows``, context length 1) of at most ``max_length`` tokens."""
    import torch
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from interventions.arch_extras import decoder_token_kwargs

    spec, model = engine.spec, engine.model
    out = []
    for req in tqdm(requests, disable=disable, desc="audio_lalm rolling"):
        text = req.args[0]
        ids = engine.encode_text(text)
        total = 0.0
        for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(
                token_list=ids, prefix_token=prefix_token, max_seq_len=max_length, context_len=1)):
            seq = torch.tensor([ctx + pred], device=engine.device)
            emb = spec.embed_ids(model, seq)
            with torch.no_grad():
                extra = decoder_token_kwargs(spec, model, seq)  # e.g. Gemma 3n's per-layer inputs
                h = spec.decoder_module(model)(inputs_embeds=emb, return_dict=True, **extra).last_hidden_state
                lp = torch.log_softmax(engine.unembed(h[0, -len(pred) - 1:-1] if len(ctx) else h[0]), -1)
            tgt = torch.tensor(pred, device=lp.device)
            total += float(lp[torch.arange(len(pred)), tgt].sum())
        out.append(total)
        if cache_hook is not None:
            cache_hook.add_partial("loglikelihood_rolling", (text,), total)
    return out
