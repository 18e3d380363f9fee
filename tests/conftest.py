"""Shared fixtures. The helpers (tiny configs, random-but-nontrivial weights, inputs shaped like MobileCLIP's) live in
`modeling_mobileclip.testing_utils`, shared with the benchmarks; tests import them from here or from there."""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

# OpenVINO 2026.4's CPU plugin segfaults running NNCF's int8 MCi image encoders with its AMX kernels (Intel Xeon with
# amx_int8; the README's export section). The suite caps oneDNN (PyTorch's and OpenVINO's) below AMX, before either
# loads, so that it checks the same kernels on every x86 CPU; the cap is an upper bound, a no-op without AMX. Set here,
# it reaches the spawned processes and the benchmark subprocesses too.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

from modeling_mobileclip.configuration_mobileclip import MobileCLIPConfig  # noqa: E402
from modeling_mobileclip.testing_utils import EOT, SOT, image_inputs, randomize_, text_inputs, tiny_config  # noqa: E402

__all__ = ["EOT", "SOT", "image_inputs", "in_fresh_process", "randomize_", "text_inputs", "tiny_config"]


def in_fresh_process(check, *args):
    """Runs `check(*args)` (a module-level function) in a new interpreter (spawned, not forked) and raises its
    failure here: for runtimes that must not be loaded into the test process. A child that dies (a crash in native
    code) raises BrokenProcessPool here instead of hanging the suite."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(check, *args).result()


@pytest.fixture
def tiny_s0_config() -> MobileCLIPConfig:
    return tiny_config(text_tower="mct")
