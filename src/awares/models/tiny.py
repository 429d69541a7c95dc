"""Build a tiny random checkpoint of any supported family, with a tokenizer and processor made fully offline.

The model is transformers' own class of the family (``TinyConfig.family``; by default the shipped
miniature's) with a small config; the tokenizer is a byte-level BPE trained with
``tokenizers`` on the project's own text, carrying the Qwen special tokens and the family's chat
template. Everything is saved with ``save_pretrained`` and reloads with ``from_pretrained`` like any
hub checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..crops import CROP_NAMES
from ..protocol import SYSTEM_PROMPT
from .families import DEFAULT_FAMILY, Family, family_of
from .processor import image_only_processor, save_processor

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


@dataclass
class TinyConfig:
    """Sizes of the tiny model and its processor (defaults train on a 2-core CPU)."""

    family: str = DEFAULT_FAMILY  # a model type of models.families.FAMILIES
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 384
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 192
    # Qwen2.5-VL: full attention in the last vision block (else windows only, ~25% faster on CPU)
    vision_full_attention: bool = False
    rope_theta: float = 10000.0  # text M-RoPE base
    # Text M-RoPE frequencies: interleaved t, h, w (``mrope_section = [1] * (head_dim // 2)``, the idea
    # of Qwen3-VL's interleaved M-RoPE; still a valid Qwen2.5-VL config) or Qwen2.5-VL's split, which
    # at head_dim 32 gives the width axis only its lowest frequencies (<= ~0.003 rad per token); the
    # localisation probe reached 37.5% with interleaving and 27.5% with the split (docs/experiments/localisation.md).
    mrope_interleaved: bool = True
    # Share of the patch-embedding filters made zero-mean at init (0: none, 1: all), keeping
    # `patch_filter_mean` of their mean. A zero-mean filter embeds flat regions to zero and sees only
    # structure and edges: all of them made the plate of v4 findable from scratch but kept the base from
    # learning the background's colour; a small kept mean leaves flat colour a weak path
    # (docs/experiments/localisation.md).
    center_patch_filters: float = 0.0
    patch_filter_mean: float = 0.0
    bpe_vocab: int = 1024
    merge_size: int = 2  # patches merged per side into one LLM token, as in every supported family
    # Pixels per patch side; None: the family's. A miniature whose family has 16-px patches takes 14
    # to share the synthetic benchmark's 28-px grid (data/synthetic.py).
    patch_size: int | None = None
    # The paper's evaluation budget caps the full image at 2048 visual tokens; the floor is lowered to
    # one token so that small views and zooms are never resampled. None: that many tokens of the
    # model's cell (patch_size x merge_size pixels a side).
    min_pixels: int | None = None
    max_pixels: int | None = None
    seed: int = 0
    extra_corpus: list[str] = field(default_factory=list)


def _corpus(extra: list[str]) -> list[str]:
    """Text the BPE is trained on: the protocol's own strings, digits, words and letters."""
    lines = [SYSTEM_PROMPT, str(CROP_NAMES), "GET_CROPS: ['0', '5']", "GET_CROPS: ['all']"]
    lines += [f"GET_CROPS: ['{i}']" for i in CROP_NAMES]
    lines += [" ".join(str(n) for n in range(i, i + 50)) for i in range(0, 1000, 50)]
    lines += ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()[]{}-_/"]
    lines += ["What is the color of the large shape? What is written on the small label? yes no"]
    return lines + list(extra)


def build_tokenizer(config: TinyConfig) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE offline and wrap it as a Qwen-style fast tokenizer."""
    bpe = Tokenizer(models.BPE())
    # Like Qwen2's tokenizer, numbers are split into single digits before byte-level BPE.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.bpe_vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(config.extra_corpus), trainer=trainer)
    family = family_of(config.family)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
    )
    tokenizer.chat_template = family.chat_template()
    return tokenizer


def build_processor(config: TinyConfig) -> Any:
    """Tokenizer plus the family's PIL image processor, with the tiny token budget."""
    family = family_of(config.family)
    tokenizer = build_tokenizer(config)
    patch = config.patch_size or family.patch_size
    cell = patch * config.merge_size
    image_processor = Family.cls(family.image_processor_class)(
        min_pixels=config.min_pixels or cell * cell,
        max_pixels=config.max_pixels or 2048 * cell * cell,
        patch_size=patch,
        merge_size=config.merge_size,
    )
    return image_only_processor(family)(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def model_config(config: TinyConfig, tokenizer: PreTrainedTokenizerFast) -> Any:
    """The family's config of ``config``'s sizes, its special-token ids from ``tokenizer``."""
    family = family_of(config.family)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    sizes = _Sizes(config, len(tokenizer), config.patch_size or family.patch_size)
    return Family.cls(family.config_class)(**family.tiny(sizes, ids))


@dataclass
class _Sizes:
    """``TinyConfig`` with the tokenizer's vocabulary size and the patch size, what a family's ``tiny`` reads."""

    config: TinyConfig
    vocab_size: int
    patch_size: int

    def __getattr__(self, name: str) -> Any:
        return getattr(self.config, name)


def build_model(config: TinyConfig, tokenizer: PreTrainedTokenizerFast) -> Any:
    """A randomly initialised model of the family, whose special-token ids come from ``tokenizer``."""
    torch.manual_seed(config.seed)
    model = Family.cls(family_of(config.family).model_class)(model_config(config, tokenizer))
    if config.center_patch_filters:
        center_patch_filters(model, float(config.center_patch_filters), config.patch_filter_mean)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return model.eval()


def center_patch_filters(model: Any, share: float = 1.0, keep_mean: float = 0.0) -> None:
    """Remove all but ``keep_mean`` of the mean over its patch, per colour channel, from the
    first ``share`` of the patch-embedding filters.

    Flat regions then embed to (nearly) zero in those channels, and a patch's embedding there is
    carried by its structure (edges, fine patterns) rather than by its average colour, which random
    filters let dominate; the other filters keep seeing the colour at full strength.
    """
    with torch.no_grad():
        weight = model.model.visual.patch_embed.proj.weight  # (hidden, 3, temporal, patch, patch)
        count = round(weight.shape[0] * share)
        weight[:count] -= (1 - keep_mean) * weight[:count].mean(dim=(-2, -1), keepdim=True)


def build_tiny(output_dir: str | Path, config: TinyConfig | None = None) -> Path:
    """Build and save the tiny model and processor to ``output_dir``; return the directory."""
    config = config or TinyConfig()
    output_dir = Path(output_dir)
    processor = build_processor(config)
    model = build_model(config, processor.tokenizer)
    model.save_pretrained(output_dir)
    save_processor(processor, output_dir)
    return output_dir
