"""Where a model looks: the attention of each row's last prompt token (the one that predicts the
answer) over every position, at one softmax-attention decoder layer of a supported family's language model.

Why a hook that recomputes it: with SDPA (the default) no layer returns its attention weights, and
asking for them switches every layer to eager attention and keeps every layer's weights (a 7B model
would hold 28 of them). The hook on one layer takes that layer's input and rotary embedding, makes
the last position's query as the layer does, and scores it against the keys the layer has just
written to the cache; the tests check it against eager attention's own weights, on every family.
The family says how its query is made (``Family.gated_query``; a ``q_norm`` where the layer has one;
rotary on the first dimensions the rotary embedding covers, all or a part) and which layers have
softmax attention (a hybrid family's linear-attention layers have none).
"""

from __future__ import annotations

from typing import Any

import torch

from .families import family_of, language_layers


class LastTokenAttention:
    """Within ``with``, records the attention of each row's last position at softmax-attention layer
    ``layer`` (counted among those layers; negative from the end) in the first forward pass:
    ``weights`` (rows, positions), the mean over heads; positions where ``key_mask`` is 0 get none."""

    def __init__(self, model: Any, layer: int, key_mask: torch.Tensor | None = None):
        family = family_of(model)
        attention_layers = family.attention_layers(model)
        self.index = attention_layers[range(len(attention_layers))[layer]]
        self.attention = language_layers(model)[self.index].self_attn
        self.gated = family.gated_query
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
        query = module.q_proj(hidden).view(hidden.shape[0], 1, -1, module.head_dim * (2 if self.gated else 1))
        query = query[..., : module.head_dim]  # a gated query's second half is the output gate
        if hasattr(module, "q_norm"):
            query = module.q_norm(query)
        query = query.transpose(1, 2)
        rotary, rest = query[..., : cos.shape[-1]], query[..., cos.shape[-1] :]
        half = rotary.shape[-1] // 2
        rotary = rotary * cos + torch.cat((-rotary[..., half:], rotary[..., :half]), dim=-1) * sin
        query = torch.cat((rotary, rest), dim=-1)
        keys = kwargs["past_key_values"].layers[self.index].keys
        keys = keys.repeat_interleave(module.num_key_value_groups, dim=1)
        scores = (query.float() @ keys.float().transpose(-1, -2)) * module.scaling  # (rows, heads, 1, positions)
        if self.key_mask is not None:
            mask = self.key_mask[:, -scores.shape[-1] :].bool()
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        self.weights = scores.softmax(dim=-1).mean(dim=1)[:, 0]
