"""Example inputs shaped like the processor's, for tracing, checking and timing a model without real data.

The exporter traces and verifies graphs on them, the converter compares with reference implementations on them, and
the benchmarks and tests feed them to the towers.
"""

from collections.abc import Sequence

import torch

from .configuration_mobileclip import MobileCLIPTextConfig, MobileCLIPVisionConfig


def example_pixel_values(config: MobileCLIPVisionConfig, batch: int, seed: int = 0) -> torch.Tensor:
    """Random pixels in [0, 1], the range the image processor produces, at the tower's image size."""
    size = config.image_size
    return torch.rand(batch, config.num_channels, size, size, generator=torch.Generator().manual_seed(seed))


def example_input_ids(config: MobileCLIPTextConfig, batch: int, seed: int = 0,
                      ends: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Token ids shaped like the tokenizer's: start token, random tokens, end token (the largest id), padding.

    Args:
        config: the text tower's config (context length and special token ids).
        batch: number of rows.
        seed: seed of the random tokens (and of the ends when not given).
        ends: position of the end token in each row; default random in `[2, context length)`. `context length - 1`
            for every row gives full-length texts (no padding).
    """
    generator = torch.Generator().manual_seed(seed)
    length = config.max_position_embeddings
    ids = torch.randint(1, config.eos_token_id - 1, (batch, length), generator=generator)
    ids[:, 0] = config.bos_token_id
    if ends is None:
        ends = torch.randint(2, length, (batch,), generator=generator)
    for row, end in enumerate(torch.as_tensor(ends).tolist()):
        ids[row, end] = config.eos_token_id
        ids[row, end + 1 :] = config.pad_token_id or 0
    return ids


__all__ = ["example_input_ids", "example_pixel_values"]
