"""Shared fixtures: tiny configs, random-but-nontrivial weights, and inputs shaped like MobileCLIP's."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

from modeling_mobileclip.configuration_mobileclip import (  # noqa: E402
    MobileCLIPConfig,
    MobileCLIPTextConfig,
    MobileCLIPVisionConfig,
)

EOT, SOT = 49407, 49406


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms, and random layer scales, so that re-parameterisation and
    conversion are tested on weights where every branch matters (fresh models have identity-like BN and 1e-5
    layer scales)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.2)
    for name, param in model.named_parameters():
        if "layer_scale" in name or name.endswith(".gamma"):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        elif name.endswith("logit_scale"):
            param.fill_(4.0)
        elif name.endswith("projection_layer"):  # Apple leaves its text projection as torch.empty
            param.copy_(torch.randn(param.shape, generator=generator) * param.shape[0] ** -0.5)
    return model.eval()


def text_inputs(batch: int = 3, context_length: int = 77, vocab_size: int = 49408, seed: int = 0) -> torch.Tensor:
    """Token ids as the tokenizer makes them: SOT, random tokens, EOT (the largest id), then zero padding."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size - 2, (batch, context_length), generator=generator)
    ids[:, 0] = vocab_size - 2
    lengths = torch.linspace(2, context_length - 1, batch).long()
    for row, length in enumerate(lengths):
        ids[row, length] = vocab_size - 1
        ids[row, length + 1 :] = 0
    return ids


def image_inputs(batch: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def tiny_config(
    text_tower: str = "transformer",
    architecture: str = "fastvit_mci0",
    causal: bool = False,
    vocab_size: int = 49408,
    context_length: int = 16,
    **kwargs,
) -> MobileCLIPConfig:
    """A MobileCLIP config small enough for fast CPU tests, with every block type of the chosen towers."""
    text = MobileCLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=context_length,
        text_tower=text_tower,
        use_causal_mask=causal,
        projection_dim=24,
        eos_token_id=vocab_size - 1,
        bos_token_id=vocab_size - 2,
    )
    if architecture.startswith("fastvit_"):
        vision = MobileCLIPVisionConfig(
            architecture=architecture,
            image_size=64,
            projection_dim=24,
            model_args={"layers": [1, 1, 1, 1], "embed_dims": [16, 16, 32, 64]},
        )
    else:
        vision = MobileCLIPVisionConfig(
            architecture=architecture,
            image_size=28,
            projection_dim=24,
            model_args={"embed_dim": 32, "depth": 2, "num_heads": 2},
        )
    return MobileCLIPConfig(text_config=text, vision_config=vision, projection_dim=24, **kwargs)


@pytest.fixture
def tiny_s0_config() -> MobileCLIPConfig:
    return tiny_config(text_tower="mct")
