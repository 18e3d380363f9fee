"""MobileCLIP configurations and the one table of released variants.

MobileCLIP (Vasu et al., CVPR 2024, https://arxiv.org/abs/2311.17049) and MobileCLIP2 (2025,
https://arxiv.org/abs/2508.20691) are CLIP-style dual encoders. Image towers are timm's (`fastvit_mci*`,
`vit_base_mci_224`, `vit_large_patch14_clip_224`); text towers are a pre-norm transformer or S0's hybrid MCt
(RepMixer, transformer layers, RepMixer). `VARIANTS` holds every released architecture together with the
preprocessing its checkpoint was trained with (apple/ml-mobileclip and open_clip's pretrained registry).
"""

import math

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Text towers: the S1/S2/B transformer (12 x 512 wide), MobileCLIP2's and the large variants' 768-wide one, and S0's
# MCt (RepMixer block, 4 transformer layers, RepMixer block).
_BASE_512 = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
_BASE_768 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
_MCT_512 = dict(_BASE_512, num_hidden_layers=4, text_tower="mct")

# Preprocessing, per checkpoint: no mean/std (pixels in [0, 1]) for v1 and MobileCLIP2-S0/S2/B (Apple's transform,
# open_clip `_mccfg`), OpenAI mean/std for MobileCLIP2-S3/S4/L-14 (open_clip `_mc2cfg`), bicubic for L-14 only.
# Apple does not document v1 S3/S4/L-14 preprocessing; they follow the v1 family (no mean/std).
_NO_NORM = dict(image_mean=None, image_std=None, resample="bilinear")
_OPENAI_NORM = dict(image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, resample="bilinear")


def _variant(image_tower, image_size, text, projection_dim, preprocess, causal=False, **vision):
    return dict(
        vision=dict(architecture=image_tower, image_size=image_size, projection_dim=projection_dim, **vision),
        text=dict(text, use_causal_mask=causal, projection_dim=projection_dim),
        projection_dim=projection_dim,
        preprocess=preprocess,
    )


# v1 MobileCLIP-B was trained with Apple's ViT-B/16, whose conv stem pads its first conv by 1 and whose LayerNorms use
# eps 1e-5; timm's `vit_base_mci_224` (MobileCLIP2-B) uses padding 0 and eps 1e-6. Outputs differ by ~0.1 otherwise.
_V1_VIT_B = dict(stem_padding=1, layer_norm_eps=1e-5)

VARIANTS = {
    "mobileclip-s0": _variant("fastvit_mci0", 256, _MCT_512, 512, _NO_NORM),
    "mobileclip-s1": _variant("fastvit_mci1", 256, _BASE_512, 512, _NO_NORM),
    "mobileclip-s2": _variant("fastvit_mci2", 256, _BASE_512, 512, _NO_NORM),
    "mobileclip-b": _variant("vit_base_mci_224", 224, _BASE_512, 512, _NO_NORM, causal=True, **_V1_VIT_B),
    "mobileclip-s3": _variant("fastvit_mci3", 256, _BASE_768, 768, _NO_NORM),
    "mobileclip-s4": _variant("fastvit_mci4", 256, _BASE_768, 768, _NO_NORM),
    "mobileclip-l14": _variant("vit_large_patch14_clip_224", 224, _BASE_768, 768, _NO_NORM),
    "mobileclip2-s0": _variant("fastvit_mci0", 256, _BASE_512, 512, _NO_NORM),
    "mobileclip2-s2": _variant("fastvit_mci2", 256, _BASE_512, 512, _NO_NORM),
    "mobileclip2-b": _variant("vit_base_mci_224", 224, _BASE_512, 512, _NO_NORM, causal=True),
    "mobileclip2-s3": _variant("fastvit_mci3", 256, _BASE_768, 768, _OPENAI_NORM),
    "mobileclip2-s4": _variant("fastvit_mci4", 256, _BASE_768, 768, _OPENAI_NORM),
    "mobileclip2-l14": _variant(
        "vit_large_patch14_clip_224", 224, _BASE_768, 768, dict(_OPENAI_NORM, resample="bicubic")
    ),
}
# MobileCLIP-B (LT) is the same architecture as MobileCLIP-B, trained longer.
VARIANTS["mobileclip-b-lt"] = VARIANTS["mobileclip-b"]


def normalize_variant(name: str) -> str:
    """The `VARIANTS` key spelling of a variant name: lower case, `-` for `_` (`"MobileCLIP2_L14"` ->
    `"mobileclip2-l14"`). Not checked against the table: `name in VARIANTS` after this tells whether it is one."""
    return name.lower().replace("_", "-")


def get_variant(name: str) -> dict:
    """Returns the table entry of a released variant, with an error listing the valid names."""
    key = normalize_variant(name)
    if key not in VARIANTS:
        raise ValueError(f"Unknown MobileCLIP variant {name!r}. Valid variants: {', '.join(VARIANTS)}.")
    return VARIANTS[key]


@strict(accept_kwargs=True)
class MobileCLIPTextConfig(PreTrainedConfig):
    r"""Configuration of a MobileCLIP text tower.

    Args:
        text_tower: `"transformer"` (pre-norm transformer, S1/S2/B and MobileCLIP2) or `"mct"` (S0: RepMixer block,
            `num_hidden_layers` transformer layers, RepMixer block).
        use_causal_mask: causal self-attention (MobileCLIP-B, MobileCLIP2-B). All other variants attend to every
            position, padding included, so their embeddings depend on padding to `max_position_embeddings` with
            `pad_token_id` 0: the model pads inside `forward`.
        repmixer_kernel_size: width of the (1, k) depthwise kernels of the MCt RepMixer blocks.
        reparameterized: the MCt RepMixer blocks are built fused (set by `reparameterize()`, saved with the model).
    """

    model_type = "mobileclip_text_model"
    base_config_key = "text_config"

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    text_tower: str = "transformer"
    use_causal_mask: bool = False
    repmixer_kernel_size: int = 11
    layer_norm_eps: float = 1e-5
    reparameterized: bool = False
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407

    def validate_architecture(self):
        if self.text_tower not in ("transformer", "mct"):
            raise ValueError(f"text_tower must be 'transformer' or 'mct', got {self.text_tower!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )


@strict(accept_kwargs=True)
class MobileCLIPVisionConfig(PreTrainedConfig):
    r"""Configuration of a MobileCLIP image tower, a timm model.

    Args:
        architecture: timm model name: `fastvit_mci0` ... `fastvit_mci4`, `vit_base_mci_224`,
            `vit_large_patch14_clip_224`.
        model_args: keyword overrides passed to `timm.create_model` (e.g. `layers`, `embed_dims` for small models).
        stem_padding: padding of the first conv of `vit_base_mci_224`'s conv stem; `None` keeps timm's (0).
        layer_norm_eps: LayerNorm eps of the ViT blocks; `None` keeps timm's.
        reparameterized: the multi-branch blocks are built fused (set by `reparameterize()`, saved with the model).
    """

    model_type = "mobileclip_vision_model"
    base_config_key = "vision_config"

    architecture: str = "fastvit_mci2"
    image_size: int = 256
    num_channels: int = 3
    projection_dim: int = 512
    model_args: dict | None = None
    stem_padding: int | None = None
    layer_norm_eps: float | None = None
    reparameterized: bool = False
    initializer_range: float = 0.02

    def validate_architecture(self):
        if not (self.architecture.startswith("fastvit_") or self.architecture.startswith("vit_")):
            raise ValueError(
                f"architecture must be a timm FastViT/MCi or ViT name (e.g. 'fastvit_mci2', 'vit_base_mci_224'), "
                f"got {self.architecture!r}."
            )


@strict(accept_kwargs=True)
class MobileCLIPConfig(PreTrainedConfig):
    r"""Configuration of a MobileCLIP dual encoder.

    Args:
        text_config: a `MobileCLIPTextConfig` or its dict.
        vision_config: a `MobileCLIPVisionConfig` or its dict.
        projection_dim: dimension of the joint embedding space.
        logit_scale_init_value: initial log temperature, log(1 / 0.07) as in CLIP.
        variant: name of the released variant this config was built from (`VARIANTS`), if any.

    Example:

    ```python
    >>> config = MobileCLIPConfig.from_variant("mobileclip-s2")
    >>> model = MobileCLIPModel(config)
    ```
    """

    model_type = "mobileclip"
    sub_configs_defaults = {"text_config": MobileCLIPTextConfig, "vision_config": MobileCLIPVisionConfig}

    text_config: dict | MobileCLIPTextConfig | None = None
    vision_config: dict | MobileCLIPVisionConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = math.log(1 / 0.07)
    variant: str | None = None
    initializer_range: float = 0.02

    def validate_architecture(self):
        for sub in (self.text_config, self.vision_config):
            if sub.projection_dim != self.projection_dim:
                raise ValueError(
                    f"{type(sub).__name__}.projection_dim ({sub.projection_dim}) must equal MobileCLIPConfig."
                    f"projection_dim ({self.projection_dim})."
                )

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "MobileCLIPConfig":
        """Builds the configuration of a released variant, e.g. `"mobileclip-s2"` or `"mobileclip2-l14"`."""
        entry = get_variant(name)
        return cls(
            text_config=MobileCLIPTextConfig(**entry["text"]),
            vision_config=MobileCLIPVisionConfig(**entry["vision"]),
            projection_dim=entry["projection_dim"],
            variant=normalize_variant(name),
            **kwargs,
        )


__all__ = [
    "MobileCLIPConfig",
    "MobileCLIPTextConfig",
    "MobileCLIPVisionConfig",
    "VARIANTS",
    "get_variant",
    "normalize_variant",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
]
