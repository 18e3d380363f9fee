"""MobileCLIP and MobileCLIP2 models.

Image towers are timm's FastViT-MCi and ViT models (the implementations open_clip and Apple's MobileCLIP2 release
use), created without their classifier so that the CLIP projection is `visual_projection`. Text towers are written
here: the pre-norm transformer of S1/S2/B and MobileCLIP2 (`mobileclip/modules/common/transformer.py`, open_clip's
`TextTransformer`), and S0's MCt, whose first and last layers are RepMixer blocks over the token axis
(`mobileclip/modules/text/repmixer.py`). Multi-branch blocks fuse for inference with `reparameterize()`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.utils.model import reparameterize_model
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig

# Apple's CLIP clamps exp(logit_scale) at 100 in its forward, and the training recipe clamps the parameter at log(100).
MAX_LOGIT_SCALE = 100.0


# --------------------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class MobileCLIPOutput(ModelOutput):
    """Output of `MobileCLIPModel`, field for field as `CLIPOutput`.

    Attributes:
        loss: contrastive loss, when `return_loss=True`.
        logits_per_image: `(n_images, n_texts)` scaled cosine similarities.
        logits_per_text: `(n_texts, n_images)`, the transpose.
        text_embeds: L2-normalised text embeddings.
        image_embeds: L2-normalised image embeddings.
        text_model_output: the text tower's `BaseModelOutputWithPooling`.
        vision_model_output: the image tower's `BaseModelOutputWithPooling`.
    """

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class MobileCLIPTextModelOutput(ModelOutput):
    """Output of `MobileCLIPTextModelWithProjection`: projected (un-normalised) embeddings, then the tower's states
    (`hidden_states`: the embeddings and every layer's output; `attentions`: one per transformer layer)."""

    text_embeds: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MobileCLIPVisionModelOutput(ModelOutput):
    """Output of `MobileCLIPVisionModelWithProjection`: projected (un-normalised) embeddings, the tower's last feature
    map (or token sequence for ViTs), its pooled features before projection, and on request timm's intermediate
    features (`hidden_states`: one feature map per MCi stage, one token sequence per ViT block)."""

    image_embeds: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------------------
# Re-parameterisable blocks of the MCt text tower (S0). The image towers' equivalents are timm's.


def _fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Folds an inference-mode BatchNorm into the conv before it: (k * gamma / sigma, beta - mu * gamma / sigma)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _identity_kernel(dim: int, kernel_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Depthwise kernel that passes its input through: a 1 at the centre tap of every channel."""
    kernel = torch.zeros(dim, 1, *kernel_size, dtype=like.dtype, device=like.device)
    kernel[:, 0, kernel_size[0] // 2, kernel_size[1] // 2] = 1.0
    return kernel


def _depthwise_conv(dim: int, kernel_size: tuple[int, int], bias: bool) -> nn.Conv2d:
    padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    return nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim, bias=bias)


class MobileCLIPConvNorm(nn.Sequential):
    """Depthwise conv (no bias) followed by BatchNorm; keys `conv.weight`, `bn.*` as in Apple's and timm's code."""

    def __init__(self, dim: int, kernel_size: tuple[int, int]):
        super().__init__()
        self.conv = _depthwise_conv(dim, kernel_size, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _fuse_bn(self.conv.weight, self.bn)


class MobileCLIPMobileOneBlock(nn.Module):
    """Depthwise MobileOne block without activation (MobileOne, https://arxiv.org/abs/2206.04040).

    Train-time form: a BatchNorm identity branch plus, optionally, a conv-BN branch; `reparameterize()` fuses both
    into `reparam_conv`. RepMixer uses one of each: `norm` (identity branch only) and `mixer` (both branches); the
    1x1 scale branch of Apple's block never exists for (1, k) kernels.
    """

    def __init__(self, dim: int, kernel_size: tuple[int, int], use_conv: bool = True, reparameterized: bool = False):
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.reparam_conv = _depthwise_conv(dim, kernel_size, bias=True) if reparameterized else None
        if not reparameterized:
            self.identity = nn.BatchNorm2d(dim)
            self.conv_kxk = MobileCLIPConvNorm(dim, kernel_size) if use_conv else None

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        kernel, bias = _fuse_bn(_identity_kernel(self.dim, self.kernel_size, self.identity.weight), self.identity)
        if self.conv_kxk is not None:
            conv_kernel, conv_bias = self.conv_kxk.fused_kernel_bias()
            kernel, bias = kernel + conv_kernel, bias + conv_bias
        return kernel, bias

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel, bias = self.fused_kernel_bias()
        self.reparam_conv = _depthwise_conv(self.dim, self.kernel_size, bias=True).to(kernel)
        self.reparam_conv.weight.data, self.reparam_conv.bias.data = kernel.detach(), bias.detach()
        del self.identity, self.conv_kxk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        out = self.identity(x)
        return out + self.conv_kxk(x) if self.conv_kxk is not None else out


class MobileCLIPRepMixer(nn.Module):
    """RepMixer token mixer (FastViT, https://arxiv.org/abs/2303.14189): x + layer_scale * (mixer(x) - norm(x)).

    Fuses into one depthwise conv: weight = id + ls * (W_mixer - W_norm), bias = ls * (b_mixer - b_norm).
    """

    def __init__(self, dim: int, kernel_size: tuple[int, int], reparameterized: bool = False):
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.reparam_conv = _depthwise_conv(dim, kernel_size, bias=True) if reparameterized else None
        if not reparameterized:
            self.norm = MobileCLIPMobileOneBlock(dim, kernel_size, use_conv=False)
            self.mixer = MobileCLIPMobileOneBlock(dim, kernel_size, use_conv=True)
            self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        mixer_kernel, mixer_bias = self.mixer.fused_kernel_bias()
        norm_kernel, norm_bias = self.norm.fused_kernel_bias()
        scale = self.layer_scale
        kernel = _identity_kernel(self.dim, self.kernel_size, scale) + scale.unsqueeze(-1) * (
            mixer_kernel - norm_kernel
        )
        bias = scale.flatten() * (mixer_bias - norm_bias)
        self.reparam_conv = _depthwise_conv(self.dim, self.kernel_size, bias=True).to(kernel)
        self.reparam_conv.weight.data, self.reparam_conv.bias.data = kernel.detach(), bias.detach()
        del self.norm, self.mixer, self.layer_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))


class MobileCLIPConvMlp(nn.Module):
    """ConvFFN: depthwise conv-BN, then a 1x1-conv MLP. Its BatchNorm is not fused (as in Apple's code and timm)."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: tuple[int, int]):
        super().__init__()
        self.conv = MobileCLIPConvNorm(dim, kernel_size)
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class MobileCLIPRepMixerBlock(GradientCheckpointingLayer):
    """MCt's RepMixer block over a token sequence: the sequence (B, L, D) is a (B, D, 1, L) image to (1, k) kernels."""

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        dim, kernel_size = config.hidden_size, (1, config.repmixer_kernel_size)
        self.token_mixer = MobileCLIPRepMixer(dim, kernel_size, reparameterized=config.reparameterized)
        self.mlp = MobileCLIPConvMlp(dim, config.intermediate_size, kernel_size)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.transpose(1, 2).unsqueeze(2)
        x = self.token_mixer(x)
        x = x + self.layer_scale * self.mlp(x)
        return x.squeeze(2).transpose(1, 2)


# --------------------------------------------------------------------------------------------------------------------
# Transformer text layers


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    output_length: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out, so that its weights can be returned; causal (without a mask) as SDPA's `is_causal`.

    `output_length`: return the weights of the first queries only (the input's positions of a padded sequence).
    """
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    elif module.is_causal:
        future = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).triu(1)
        attn_weights = attn_weights.masked_fill(future, float("-inf"))
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    returned, attn_weights = _visible(attn_weights, output_length, dim=2)
    return torch.matmul(attn_weights, value).transpose(1, 2).contiguous(), returned


def _visible(tensor: torch.Tensor, length: int | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the first `length` entries along `dim`, the tensor rebuilt from them): returning the first part, and computing
    on with the rebuilt one, keeps what is returned in the autograd graph (its `.grad` can be retained)."""
    if length is None:
        return tensor, tensor
    first, rest = tensor.split([length, tensor.shape[dim] - length], dim=dim)
    return first, torch.cat([first, rest], dim=dim)


class MobileCLIPAttention(nn.Module):
    """Multi-head self-attention with a fused [q; k; v] projection, the layout of Apple's and open_clip's weights.

    `config._attn_implementation` picks the kernel: `"sdpa"` (the default, as the references) or `"eager"`, which
    also returns the attention weights.
    """

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = config.use_causal_mask
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).reshape(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, attn_weights = attention_interface(self, query, key, value, None, scaling=self.scaling, **kwargs)
        return self.out_proj(out.reshape(batch, length, width)), attn_weights


class MobileCLIPMLP(nn.Module):
    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class MobileCLIPEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer: x + attn(ln(x)), then x + mlp(ln(x)). Returns the output and the attention
    weights (`None` unless computed by the eager kernel)."""

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MobileCLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MobileCLIPMLP(config)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(self.layer_norm1(hidden_states), **kwargs)
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.layer_norm2(hidden_states)), attn_weights


# --------------------------------------------------------------------------------------------------------------------
# Image tower


def create_image_tower(config: MobileCLIPVisionConfig) -> nn.Module:
    """Creates the timm image tower without its classifier: its output is the pooled feature vector."""
    kwargs = dict(config.model_args or {})
    is_vit = config.architecture.startswith("vit_")
    if is_vit:
        # ViTs size their position table from img_size; FastViT is fully convolutional.
        kwargs.setdefault("img_size", config.image_size)
        if config.layer_norm_eps is not None:
            kwargs["norm_layer"] = partial(nn.LayerNorm, eps=config.layer_norm_eps)
    else:
        kwargs["inference_mode"] = config.reparameterized
    tower = timm.create_model(
        config.architecture, pretrained=False, num_classes=0, in_chans=config.num_channels, **kwargs
    )
    if config.stem_padding is not None:
        # Apple's ViT-B/16 stem (v1 MobileCLIP-B) pads its first 4x4/4 conv by 1; timm's vit_base_mci_224 by 0.
        tower.patch_embed.backbone[0].conv.padding = (config.stem_padding, config.stem_padding)
    return tower


def _sync_timm_attention(tower: nn.Module, attn_implementation: str | None) -> None:
    """Maps `attn_implementation` onto timm's per-module switch: `"eager"` is timm's written-out attention
    (`fused_attn=False`), anything else its SDPA path. Read at every call, as transformers reads the config at every
    call, so that `set_attn_implementation` takes effect."""
    fused = attn_implementation != "eager"
    for module in tower.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def _image_tower_forward(
    tower: nn.Module, config: MobileCLIPVisionConfig, pixel_values: torch.Tensor, output_hidden_states: bool
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Runs a timm tower: (last features, pooled features, per-stage / per-block intermediates or None).

    Intermediates come from timm's `forward_intermediates`, which runs the same modules as `forward_features`: MCi
    gives each stage's (B, C, H, W) map, ViTs each block's tokens, prefix tokens first, as in `last_hidden_state`.
    """
    _sync_timm_attention(tower, config._attn_implementation)
    if not output_hidden_states:
        features = tower.forward_features(pixel_values)
        return features, tower.forward_head(features), None
    if getattr(tower, "num_prefix_tokens", None) is not None:  # ViT
        features, intermediates = tower.forward_intermediates(
            pixel_values, output_fmt="NLC", return_prefix_tokens=bool(tower.num_prefix_tokens)
        )
        if tower.num_prefix_tokens:
            intermediates = [torch.cat([prefix, tokens], dim=1) for tokens, prefix in intermediates]
    else:
        features, intermediates = tower.forward_intermediates(pixel_values)
    return features, tower.forward_head(features), tuple(intermediates)


# --------------------------------------------------------------------------------------------------------------------
# Models


class MobileCLIPPreTrainedModel(PreTrainedModel):
    config_class = MobileCLIPConfig
    base_model_prefix = "mobileclip"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MobileCLIPEncoderLayer", "MobileCLIPRepMixerBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers.initialization skips tensors loaded from a checkpoint; every parameter and buffer of every
        # tower, timm's included, is covered here or by the base class (Linear, Conv, Embedding, norms).
        super()._init_weights(module)
        if isinstance(module, MobileCLIPTextModel):
            init.normal_(module.positional_embedding, std=0.01)  # open_clip's init
        elif isinstance(module, (MobileCLIPRepMixer, MobileCLIPRepMixerBlock)) and hasattr(module, "layer_scale"):
            init.constant_(module.layer_scale, 1e-5)
        elif isinstance(module, MobileCLIPModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, timm.models.vision_transformer.VisionTransformer):
            # timm's VisionTransformer.init_weights
            if module.pos_embed is not None:
                init.trunc_normal_(module.pos_embed, std=0.02)
            if module.cls_token is not None:
                init.normal_(module.cls_token, std=1e-6)
            if module.reg_token is not None:
                init.normal_(module.reg_token, std=1e-6)
        elif hasattr(module, "gamma") and isinstance(module.gamma, nn.Parameter):
            # timm's LayerScale / LayerScale2d (FastViT blocks); FastViT's keeps no init value, its default is 1e-5.
            init.constant_(module.gamma, getattr(module, "init_values", 1e-5))

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        # timm towers keep their own switch.
        if hasattr(self, "vision_model"):
            self.vision_model.set_grad_checkpointing(enable)

    def reparameterize(self) -> "MobileCLIPPreTrainedModel":
        """Fuses every multi-branch block for inference, in place; idempotent and exact up to float rounding.

        The config records it, so a saved fused model reloads fused. Returns the model for chaining:
        `MobileCLIPModel.from_pretrained(path).reparameterize().eval()`.
        """
        tower_configs = [
            c
            for c in (
                self.config,
                getattr(self.config, "text_config", None),
                getattr(self.config, "vision_config", None),
            )
            if isinstance(c, (MobileCLIPTextConfig, MobileCLIPVisionConfig))
        ]
        # timm's block-level reparameterize() is not idempotent (RepMixer re-fuses deleted branches): guard here.
        if not all(c.reparameterized for c in tower_configs):
            reparameterize_model(self, inplace=True)
            for tower_config in tower_configs:
                tower_config.reparameterized = True
        return self


def _config_of(config: MobileCLIPConfig | MobileCLIPTextConfig | MobileCLIPVisionConfig, cls: type) -> Any:
    """Lets a single tower be built from its own config or from the full model's."""
    if isinstance(config, MobileCLIPConfig):
        return config.text_config if cls is MobileCLIPTextConfig else config.vision_config
    if not isinstance(config, cls):
        raise TypeError(f"Expected a {cls.__name__} or MobileCLIPConfig, got {type(config).__name__}.")
    return config


class MobileCLIPTextModel(MobileCLIPPreTrainedModel):
    """The text tower: token and position embeddings, the layers, a final LayerNorm, pooling at the end-of-text token.

    The towers always run on `max_position_embeddings` (77) positions: inputs shorter than that are padded with
    `pad_token_id` here, because the non-causal towers attend to padding (MobileCLIP has no padding mask), so the
    reference embeddings are those of 77-token inputs padded with 0, whatever padding a caller used. The outputs
    cover the input's own positions: `last_hidden_state` and each of `hidden_states` are (batch, input length,
    hidden), `attentions` (batch, heads, input length, 77), the weights of those positions over every key they
    attended to. `attention_mask` is accepted and ignored.
    """

    config_class = MobileCLIPTextConfig
    input_modalities = ("text",)
    _input_embed_layer = "token_embedding"

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.positional_embedding = nn.Parameter(torch.empty(config.max_position_embeddings, config.hidden_size))
        layers = [MobileCLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)]
        if config.text_tower == "mct":
            layers = [MobileCLIPRepMixerBlock(config), *layers, MobileCLIPRepMixerBlock(config)]
        self.layers = nn.ModuleList(layers)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.token_embedding = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        context_length = config.max_position_embeddings
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}.")
        length = input_ids.shape[1]
        if length > context_length:
            raise ValueError(
                f"input_ids has {length} tokens but MobileCLIP's context length is {context_length}; "
                "tokenize with truncation (MobileCLIPTokenizer does by default)."
            )
        input_ids = F.pad(input_ids, (0, context_length - length), value=config.pad_token_id)
        hidden_states = self.token_embedding(input_ids) + self.positional_embedding
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        if output_attentions:
            kwargs["output_length"] = length
        for layer in self.layers:
            if output_hidden_states:
                visible, hidden_states = _visible(hidden_states, length, dim=1)
                all_hidden_states += (visible,)
            if isinstance(layer, MobileCLIPEncoderLayer):
                hidden_states, attn_weights = layer(hidden_states, **kwargs)
                if output_attentions:
                    all_attentions += (attn_weights,)
            else:
                hidden_states = layer(hidden_states)
        if output_hidden_states:
            visible, hidden_states = _visible(hidden_states, length, dim=1)
            all_hidden_states += (visible,)
        hidden_states = self.final_layer_norm(hidden_states)
        # The end-of-text token has the largest id, so argmax finds it (as in Apple's and open_clip's code).
        pooled = hidden_states[torch.arange(hidden_states.shape[0], device=input_ids.device), input_ids.argmax(-1)]
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states[:, :length],
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class MobileCLIPTextModelWithProjection(MobileCLIPPreTrainedModel):
    """The text tower and its projection alone, for text-only use; loads from a full MobileCLIP checkpoint."""

    config_class = MobileCLIPTextConfig
    input_modalities = ("text",)
    _keys_to_ignore_on_load_unexpected = [r"vision_model\..*", r"visual_projection\..*", r"logit_scale"]

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__(config)
        text_config = _config_of(config, MobileCLIPTextConfig)
        self.text_model = MobileCLIPTextModel(text_config)
        self.text_projection = nn.Linear(text_config.hidden_size, text_config.projection_dim, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.token_embedding = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MobileCLIPTextModelOutput:
        """`attention_mask` is accepted and ignored: MobileCLIP text towers have no padding mask."""
        out = self.text_model(
            input_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        return MobileCLIPTextModelOutput(
            text_embeds=self.text_projection(out.pooler_output),
            last_hidden_state=out.last_hidden_state,
            pooler_output=out.pooler_output,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class MobileCLIPVisionModelWithProjection(MobileCLIPPreTrainedModel):
    """The image tower and its projection alone; loads from a full MobileCLIP checkpoint.

    The tower is timm's module itself (so that checkpoints keep timm's key layout); its attention kernel follows
    `config._attn_implementation` through timm's `fused_attn` switch, and gradient checkpointing through timm's.
    """

    config_class = MobileCLIPVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _keys_to_ignore_on_load_unexpected = [r"text_model\..*", r"text_projection\..*", r"logit_scale"]

    def __init__(self, config: MobileCLIPVisionConfig):
        super().__init__(config)
        vision_config = _config_of(config, MobileCLIPVisionConfig)
        self.vision_model = create_image_tower(vision_config)
        self.visual_projection = nn.Linear(self.vision_model.num_features, vision_config.projection_dim)
        # The only flag transformers' gradient-checkpointing switch finds here (no transformers layers); the timm
        # tower is switched alongside in _set_gradient_checkpointing.
        self.gradient_checkpointing = False
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> MobileCLIPVisionModelOutput:
        vision_config = _config_of(self.config, MobileCLIPVisionConfig)
        if output_hidden_states is None:
            output_hidden_states = vision_config.output_hidden_states
        features, pooled, hidden_states = _image_tower_forward(
            self.vision_model, vision_config, pixel_values, output_hidden_states
        )
        return MobileCLIPVisionModelOutput(
            image_embeds=self.visual_projection(pooled),
            last_hidden_state=features,
            pooler_output=pooled,
            hidden_states=hidden_states,
        )


class MobileCLIPModel(MobileCLIPPreTrainedModel):
    """MobileCLIP dual encoder, with CLIP's public API (`CLIPModel`).

    Example:

    ```python
    >>> model = MobileCLIPModel.from_pretrained(path).reparameterize().eval()
    >>> processor = MobileCLIPProcessor.from_pretrained(path)
    >>> inputs = processor(text=["a photo of a cat", "a photo of a dog"], images=image, return_tensors="pt")
    >>> probs = model(**inputs).logits_per_image.softmax(dim=-1)
    ```
    """

    main_input_name = "input_ids"

    def __init__(self, config: MobileCLIPConfig):
        super().__init__(config)
        text_config, vision_config = config.text_config, config.vision_config
        self.text_model = MobileCLIPTextModel(text_config)
        self.vision_model = create_image_tower(vision_config)
        self.text_projection = nn.Linear(text_config.hidden_size, config.projection_dim, bias=False)
        # open_clip and timm use the classifier head, which has a bias, as the image projection (zero in v1 weights).
        self.visual_projection = nn.Linear(self.vision_model.num_features, config.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.token_embedding = value

    def save_pretrained(self, save_directory, *args, **kwargs):
        # A class registers for one auto class (`AutoModel`); the zero-shot pipeline's is added to `auto_map` here.
        module = type(self).__module__.rsplit(".", 1)[-1]
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModelForZeroShotImageClassification": f"{module}.{type(self).__name__}",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Projected, un-normalised text embeddings in `pooler_output` (transformers 5 convention), with the text
        tower's `last_hidden_state`, `hidden_states` and `attentions`.

        `attention_mask` is accepted and ignored: MobileCLIP text towers have no padding mask.
        """
        out = self.text_model(
            input_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        out.pooler_output = self.text_projection(out.pooler_output)
        return out

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """Projected, un-normalised image embeddings in `pooler_output`; the tower's last features in
        `last_hidden_state`, and on request its per-stage (MCi) or per-block (ViT) features in `hidden_states`."""
        vision_config = self.config.vision_config
        if output_hidden_states is None:
            output_hidden_states = vision_config.output_hidden_states
        features, pooled, hidden_states = _image_tower_forward(
            self.vision_model, vision_config, pixel_values, output_hidden_states
        )
        return BaseModelOutputWithPooling(
            last_hidden_state=features, pooler_output=self.visual_projection(pooled), hidden_states=hidden_states
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MobileCLIPOutput:
        """Embeds texts and/or images; with both, returns similarity logits (and the CLIP loss on request).

        Either modality alone is allowed (e.g. the image-feature-extraction pipeline passes only `pixel_values`).
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("MobileCLIPModel needs input_ids, pixel_values or both.")
        text_out = image_out = text_embeds = image_embeds = None
        if input_ids is not None:
            text_out = self.get_text_features(
                input_ids,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                **kwargs,
            )
            text_embeds = F.normalize(text_out.pooler_output, dim=-1)
        if pixel_values is not None:
            image_out = self.get_image_features(
                pixel_values, output_hidden_states=output_hidden_states, return_dict=True
            )
            image_embeds = F.normalize(image_out.pooler_output, dim=-1)

        logits_per_text = logits_per_image = loss = None
        if text_embeds is not None and image_embeds is not None:
            logit_scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
            logits_per_text = logit_scale * text_embeds @ image_embeds.t()
            logits_per_image = logits_per_text.t()
        if return_loss:
            if logits_per_text is None or text_embeds.shape[0] != image_embeds.shape[0]:
                raise ValueError(
                    "return_loss=True needs as many texts as images (matching pairs); got "
                    f"{0 if text_embeds is None else text_embeds.shape[0]} texts and "
                    f"{0 if image_embeds is None else image_embeds.shape[0]} images."
                )
            loss = clip_loss(logits_per_text)

        return MobileCLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_out,
            vision_model_output=image_out,
        )


def clip_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over matching pairs: mean of the text->image and image->text cross-entropies."""
    labels = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.t(), labels)) / 2


__all__ = [
    "MobileCLIPModel",
    "MobileCLIPOutput",
    "MobileCLIPPreTrainedModel",
    "MobileCLIPTextModel",
    "MobileCLIPTextModelOutput",
    "MobileCLIPTextModelWithProjection",
    "MobileCLIPVisionModelOutput",
    "MobileCLIPVisionModelWithProjection",
    "clip_loss",
    "create_image_tower",
]
