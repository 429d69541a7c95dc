"""The model families awares runs, each described once: what every other module asks about a
checkpoint (its classes, image grid, attention query, cache, LoRA targets, chat template) is read
here, so no other module names a family.

A family is found from a checkpoint's ``config.model_type``; any other model type is refused with
the list of supported families (``family_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import transformers

from ..errors import ModelLoadError

# Projections of a full-attention layer (every family) and of a gated-delta-net layer (hybrid ones).
_ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
_LINEAR_ATTENTION_PROJECTIONS = ("in_proj_qkv", "in_proj_z", "out_proj")


@dataclass(frozen=True, eq=False)  # one instance per family: compared and hashed by identity
class Family:
    """One family of Qwen vision-language checkpoints, as awares runs it.

    ``patch_size`` x ``merge_size`` pixels per side make one visual token (the processor's grid).
    ``gated_query``: ``q_proj`` writes each head's query followed by its output gate (the attention
    policy reads the first half). ``hybrid``: linear-attention (gated delta net) layers sit between
    the full-attention ones and carry a recurrent state that any padded or masked column would
    change, so the backend decodes such a model one conversation at a time, never leaves holes in a
    sequence, and computes the system prompt with each conversation. ``template_kwargs`` go to every
    ``apply_chat_template`` call (Qwen3.5's thinking is turned off: the protocol answers at once).
    ``tiny`` gives the config of a tiny random checkpoint of this family (``models.tiny``), whose
    chat template is ``template`` (written for awares to render as the family's shipped one does).
    ``gguf_args`` go to llama.cpp's converter (``awares export gguf``): Qwen3.5's text model is
    written without its multi-token-prediction head, which llama-server does not use and which the
    converter requires where the flag is not given (the tiny checkpoints have none).
    """

    model_type: str
    name: str
    model_class: str  # transformers class names, resolved with ``cls``
    config_class: str
    processor_class: str
    patch_size: int
    image_processor_class: str = "Qwen2VLImageProcessorPil"  # the PIL one: no torchvision needed
    merge_size: int = 2
    gated_query: bool = False
    hybrid: bool = False
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    tested_on: str = ""
    tiny: Callable[[Any, dict[str, int]], dict[str, Any]] | None = None
    template: str = "qwen2_vl.jinja"
    gguf_args: tuple[str, ...] = ()

    @staticmethod
    def cls(name: str) -> Any:
        """The transformers class named ``name``."""
        return getattr(transformers, name)

    @property
    def cell(self) -> int:
        """Pixels per side of one visual token."""
        return self.patch_size * self.merge_size

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """Module names LoRA adapts in the language model: every layer kind's projections."""
        return _ATTENTION_PROJECTIONS + (_LINEAR_ATTENTION_PROJECTIONS if self.hybrid else ())

    def chat_template(self) -> str:
        """The chat template of this family's tiny checkpoints."""
        return resources.files(__package__).joinpath("templates", self.template).read_text()

    def attention_layers(self, model: Any) -> list[int]:
        """Indexes of the decoder layers with softmax attention (the ones the attention policy reads)."""
        layers = language_layers(model)
        return [i for i, layer in enumerate(layers) if hasattr(layer, "self_attn")]


def _text(c: Any, ids: dict[str, int], rotary_dim: int) -> dict[str, Any]:
    """The language model's config: ``c``'s sizes, M-RoPE over ``rotary_dim`` of each head (Qwen2.x:
    ``[1] * half`` interleaves t, h, w in a Qwen2.5-VL config, see ``TinyConfig.mrope_interleaved``)."""
    half = rotary_dim // 2
    split = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]  # 16/24/24 of 64 in Qwen2.5-VL-7B
    return dict(
        vocab_size=c.vocab_size,
        hidden_size=c.text_hidden,
        intermediate_size=c.text_intermediate,
        num_hidden_layers=c.text_layers,
        num_attention_heads=c.text_heads,
        num_key_value_heads=c.text_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": c.rope_theta,
            "mrope_section": [1] * half if c.mrope_interleaved else split,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def _tokens(ids: dict[str, int]) -> dict[str, int]:
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _qwen2_vl_tiny(c: Any, ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        depth=c.vision_layers, embed_dim=c.vision_hidden, hidden_size=c.text_hidden, num_heads=c.vision_heads,
        mlp_ratio=c.vision_intermediate // c.vision_hidden, patch_size=c.patch_size, spatial_merge_size=c.merge_size,
    )  # fmt: skip
    return dict(text_config=_text(c, ids, c.text_hidden // c.text_heads), vision_config=vision, **_tokens(ids))


def _qwen2_5_vl_tiny(c: Any, ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        depth=c.vision_layers, hidden_size=c.vision_hidden, intermediate_size=c.vision_intermediate,
        num_heads=c.vision_heads, out_hidden_size=c.text_hidden, window_size=8 * c.patch_size, patch_size=c.patch_size,
        spatial_merge_size=c.merge_size,
        # Qwen2.5-VL mixes windowed and full attention in its vision tower
        fullatt_block_indexes=[c.vision_layers - 1] if c.vision_full_attention else [],
    )  # fmt: skip
    return dict(text_config=_text(c, ids, c.text_hidden // c.text_heads), vision_config=vision, **_tokens(ids))


def _qwen3_vision(c: Any, **extra: Any) -> dict[str, Any]:
    return dict(
        depth=c.vision_layers, hidden_size=c.vision_hidden, intermediate_size=c.vision_intermediate,
        num_heads=c.vision_heads, out_hidden_size=c.text_hidden, patch_size=c.patch_size,
        spatial_merge_size=c.merge_size, num_position_embeddings=256, **extra,
    )  # fmt: skip


def _qwen3_text(c: Any, ids: dict[str, int], rotary_dim: int) -> dict[str, Any]:
    """Qwen3.x's language model: interleaved M-RoPE in its own sections (24/20/20 of 64 in Qwen3-VL-8B)."""
    half = rotary_dim // 2
    text = _text(c, ids, rotary_dim) | {"head_dim": c.text_hidden // c.text_heads}
    sections = [half - 2 * (5 * half // 16), 5 * half // 16, 5 * half // 16]
    text["rope_parameters"] |= {"mrope_section": sections, "mrope_interleaved": True}
    return text


def _qwen3_vl_tiny(c: Any, ids: dict[str, int]) -> dict[str, Any]:
    text = _qwen3_text(c, ids, c.text_hidden // c.text_heads)
    vision = _qwen3_vision(c, deepstack_visual_indexes=[0])
    return dict(text_config=text, vision_config=vision, **_tokens(ids))


def _qwen3_5_tiny(c: Any, ids: dict[str, int]) -> dict[str, Any]:
    head_dim = c.text_hidden // c.text_heads
    text = _qwen3_text(c, ids, head_dim // 4)  # Qwen3.5 rotates a quarter of each head
    text["rope_parameters"]["partial_rotary_factor"] = 0.25
    every = min(4, c.text_layers)  # one full-attention layer in four, the last layer always
    text["layer_types"] = [
        "full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(c.text_layers)
    ]
    text |= dict(
        linear_num_key_heads=c.text_kv_heads, linear_num_value_heads=c.text_heads,
        linear_key_head_dim=head_dim, linear_value_head_dim=head_dim,
    )  # fmt: skip
    return dict(text_config=text, vision_config=_qwen3_vision(c), **_tokens(ids))


DEFAULT_FAMILY = "qwen2_5_vl"  # the released AwaRes checkpoint's, and the shipped miniature's
FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family(
            "qwen2_vl", "Qwen2-VL", "Qwen2VLForConditionalGeneration", "Qwen2VLConfig", "Qwen2VLProcessor", 14,
            tested_on="tiny random checkpoints", tiny=_qwen2_vl_tiny,
        ),
        Family(
            "qwen2_5_vl", "Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig", "Qwen2_5_VLProcessor",
            14, tested_on="the shipped miniature; Qwen2.5-VL-7B's shape on a GPU (scripts/gpu_7b_shape.py)",
            tiny=_qwen2_5_vl_tiny,
        ),
        Family(
            "qwen3_vl", "Qwen3-VL", "Qwen3VLForConditionalGeneration", "Qwen3VLConfig", "Qwen3VLProcessor", 16,
            tested_on="tiny random checkpoints", tiny=_qwen3_vl_tiny, template="qwen3_vl.jinja",
        ),
        Family(
            "qwen3_5", "Qwen3.5", "Qwen3_5ForConditionalGeneration", "Qwen3_5Config", "Qwen3VLProcessor", 16,
            gated_query=True, hybrid=True, template_kwargs={"enable_thinking": False},
            tested_on="tiny random checkpoints", tiny=_qwen3_5_tiny, template="qwen3_5.jinja",
            gguf_args=("--no-mtp",),
        ),
    )
}  # fmt: skip


def supported() -> str:
    """The supported families, for messages."""
    return ", ".join(f"{f.name} ({f.model_type})" for f in FAMILIES.values())


def family_of(model_or_config: Any) -> Family:
    """The family of a model, its config, or a ``model_type`` string; ``ModelLoadError`` naming the
    supported families for any other."""
    model_or_config = getattr(model_or_config, "module", model_or_config)  # a DistributedDataParallel wrapper
    config = getattr(model_or_config, "config", model_or_config)
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ModelLoadError(f"model type {model_type!r} is not supported; awares runs {supported()}")
    return FAMILIES[model_type]


def language_layers(model: Any) -> Any:
    """The decoder layers of a (possibly LoRA-wrapped) vision-language model's language model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model.language_model.layers
