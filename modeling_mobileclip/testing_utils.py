"""Helpers shared by the tests and the benchmarks: tiny configs, weights where every branch matters, example inputs,
photo-like images.

As transformers' `testing_utils`, a library module so that `tests/conftest.py` and `benchmarks/` import the same
code; nothing here needs pytest.
"""

import numpy as np
import torch

from .configuration_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig
from .example_inputs import example_input_ids, example_pixel_values

EOT, SOT = 49407, 49406


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms, and random layer scales, so that re-parameterisation and
    conversion are tested on weights where every branch matters (fresh models have identity-like BN and 1e-5
    layer scales). Works on this package's models and on the reference implementations (Apple's, open_clip, timm)."""
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
    """Token ids as the tokenizer makes them (`example_input_ids`), the end token at evenly spread positions from
    2 to the last, for a vocabulary whose last two ids are the start and end tokens."""
    config = MobileCLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=context_length,
                                  eos_token_id=vocab_size - 1, bos_token_id=vocab_size - 2, pad_token_id=0)
    return example_input_ids(config, batch, seed, ends=torch.linspace(2, context_length - 1, batch).long())


def image_inputs(batch: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    """Random pixels in [0, 1] (`example_pixel_values`) at `size`."""
    return example_pixel_values(MobileCLIPVisionConfig(image_size=size), batch, seed)


def natural_pixels(seed: int, height: int, width: int) -> np.ndarray:
    """A photo-like RGB image: 1/f noise (the amplitude spectrum of natural images) with correlated colour channels.
    As a JPEG at quality 90, a 400x300 one is about 70 KB and decodes in about the time of a photo of that size."""
    rng = np.random.default_rng(seed)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(width), np.fft.fftfreq(height)))
    f[0, 0] = 1.0
    planes = [np.real(np.fft.ifft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f)) for _ in "rgb"]
    x = np.stack([(p - p.mean()) / p.std() for p in planes], -1)
    x = 0.6 * x + 0.4 * x.mean(-1, keepdims=True)
    return np.clip(128 + 48 * x, 0, 255).astype(np.uint8)


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


__all__ = ["EOT", "SOT", "image_inputs", "natural_pixels", "randomize_", "text_inputs", "tiny_config"]
