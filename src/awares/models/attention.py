"""Where a model looks: the attention of each row's last prompt token (the one that predicts the
answer) over every position, at one decoder layer of a Qwen2-VL-family language model.

Why a hook that recomputes it: with SDPA (the default) no layer returns its attention weights, and
asking for them switches every layer to eager attention and keeps every layer's weights (a 7B model
would hold 28 of them). The hook on one layer takes that layer's input and rotary embedding, makes
the last position's query as the layer does, and scores it against the keys the layer has just
written to the cache; the tests check it against eager attention's own weights.
"""

from __future__ import annotations

from typing import Any

import torch


class LastTokenAttention:
    """Within ``with``, records the attention of each row's last position at decoder layer ``layer``
    (negative counts from the end) in the first forward pass: ``weights`` (rows, positions), the
    mean over heads; positions where ``key_mask`` is 0 get none."""

    def __init__(self, model: Any, layer: int, key_mask: torch.Tensor | None = None):
        layers = model.model.language_model.layers
        self.index = range(len(layers))[layer]
        self.attention = layers[self.index].self_attn
        self.key_mask = key_mask
        self.weights: torch.Tensor | None = None

    def __enter__(self) -> LastTokenAttention:
        self.handle = self.attention.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    def _hook(self, module: Any, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        if self.weights is not None:  # decoding steps after the prefill
            return
        hidden = (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0])[:, -1:]
        cos, sin = (t[:, -1:].unsqueeze(1) for t in kwargs["position_embeddings"])
        query = module.q_proj(hidden).view(hidden.shape[0], 1, -1, module.head_dim).transpose(1, 2)
        half = query.shape[-1] // 2
        query = query * cos + torch.cat((-query[..., half:], query[..., :half]), dim=-1) * sin
        keys = kwargs["past_key_values"].layers[self.index].keys
        keys = keys.repeat_interleave(module.num_key_value_groups, dim=1)
        scores = (query.float() @ keys.float().transpose(-1, -2)) * module.scaling  # (rows, heads, 1, positions)
        if self.key_mask is not None:
            mask = self.key_mask[:, -scores.shape[-1] :].bool()
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        self.weights = scores.softmax(dim=-1).mean(dim=1)[:, 0]
