"""Shared fixtures. The helpers (tiny configs, random-but-nontrivial weights, inputs shaped like MobileCLIP's) live in
`modeling_mobileclip.testing_utils`, shared with the benchmarks; tests import them from here or from there."""

import multiprocessing
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

from modeling_mobileclip.configuration_mobileclip import MobileCLIPConfig  # noqa: E402
from modeling_mobileclip.testing_utils import EOT, SOT, image_inputs, randomize_, text_inputs, tiny_config  # noqa: E402

__all__ = ["EOT", "SOT", "image_inputs", "in_fresh_process", "randomize_", "text_inputs", "tiny_config"]


def in_fresh_process(check, *args):
    """Runs `check(*args)` (a module-level function) in a new interpreter (spawned, not forked) and raises its
    failure here: for runtimes that must not be loaded into the test process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(check, args)


@pytest.fixture
def tiny_s0_config() -> MobileCLIPConfig:
    return tiny_config(text_tower="mct")
