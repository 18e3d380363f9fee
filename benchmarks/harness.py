"""Interleaved timing of several candidates, robust to a noisy shared machine, and the benchmarks' result files.

Every round calls each candidate once, in a freshly shuffled order, so a burst of load from another process hits all
candidates of that round about equally; ratios are then taken per round (paired) as well as of medians. Rounds hit by
a burst much longer than the round itself can be discarded and re-run (`burst_factor`).
"""

import ctypes
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable

import torch

from modeling_mobileclip.atomic import atomic_path, write_json


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, seed: int = 0,
                sync: Callable[[], None] = lambda: None, burst_factor: float | None = None,
                max_extra_rounds: int = 0) -> tuple[dict[str, list[float]], int]:
    """Times each candidate `rounds` times, interleaved, after `warmup` untimed calls of each.

    On a shared machine, another process can take a core for seconds; PyTorch's OpenMP threads then slow down 10-50x
    while onnxruntime (not spin-waiting) slows down 2x, so such bursts distort medians and even paired ratios. With
    `burst_factor`, a round whose total time exceeds `burst_factor` times the fastest round's is discarded, and up to
    `max_extra_rounds` more rounds are run to replace the discarded ones.

    Args:
        candidates: name -> zero-argument callable.
        rounds: timed calls per candidate wanted.
        warmup: untimed calls per candidate first (lazy initialisation, allocator and cache warm-up).
        seed: seed of the shuffles, for reproducible call orders.
        sync: called before and after each timed call (e.g. `torch.cuda.synchronize`).
        burst_factor: discard rounds slower than this multiple of the fastest round (None: keep every round).
        max_extra_rounds: rounds that may be run beyond `rounds` to replace discarded ones.

    Returns:
        name -> per-round times in seconds (index i is the same round for every candidate), and the number of rounds
        discarded as bursts.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    rng = random.Random(seed)
    all_rounds = []

    def kept() -> list[dict[str, float]]:
        if burst_factor is None:
            return all_rounds
        fastest = min(sum(r.values()) for r in all_rounds)
        return [r for r in all_rounds if sum(r.values()) <= burst_factor * fastest]

    while len(all_rounds) < rounds or (len(kept()) < rounds and len(all_rounds) < rounds + max_extra_rounds):
        order = list(candidates)
        rng.shuffle(order)
        times = {}
        for name in order:
            sync()
            start = time.perf_counter()
            candidates[name]()
            sync()
            times[name] = time.perf_counter() - start
        all_rounds.append(times)
    rounds_kept = kept()
    return {name: [r[name] for r in rounds_kept] for name in candidates}, len(all_rounds) - len(rounds_kept)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def summarize(times_s: list[float]) -> dict[str, float]:
    """Median, quartiles and range in milliseconds."""
    ms = [t * 1e3 for t in times_s]
    q1, q3 = _quartiles(ms)
    return dict(median_ms=statistics.median(ms), q1_ms=q1, q3_ms=q3, min_ms=min(ms), max_ms=max(ms), n=len(ms))


def ratios(times_s: dict[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    """For every candidate, its time divided by the baseline's: of medians, and the median of per-round ratios
    (paired, the estimate that holds up best under noise). Above 1: slower than the baseline."""
    base = times_s[baseline]
    out = {}
    for name, values in times_s.items():
        out[name] = dict(
            medians=statistics.median(values) / statistics.median(base),
            paired=statistics.median(v / b for v, b in zip(values, base)),
        )
    return out


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_rss_delta_mb(fn: Callable[[], object]) -> float | None:
    """Increase of the process's peak resident memory over its current one during one call, in MiB (Linux).

    First hands the heap's free pages back to the OS (`malloc_trim`; otherwise buffers freed by earlier calls stay
    resident and are reused, and every candidate would show ~0), then resets the kernel's high-water mark
    (`/proc/self/clear_refs`), so this is the transient memory of the call (activations, workspaces). Memory a
    candidate keeps between calls (weights, onnxruntime's allocator arena) is already resident and not counted.
    `None` where the high-water mark cannot be reset.
    """
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) / 1024
    except (OSError, AttributeError):
        return None


def memory_probe(device: str) -> Callable[[Callable[[], object]], float | None]:
    """Per-call peak memory in MiB: `peak_rss_delta_mb` on CPU, the allocator's peak on CUDA."""
    if device != "cuda":
        return peak_rss_delta_mb

    def cuda_peak(fn):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20

    return cuda_peak


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def write_results(result: dict, table: str, out: str) -> None:
    """Prints the markdown table; writes the JSON to `out` and the table next to it (`.md`), each atomically."""
    print("\n" + table)
    write_json(out, result)
    with atomic_path(os.path.splitext(out)[0] + ".md") as tmp, open(tmp, "w") as f:
        f.write(table + "\n")


__all__ = ["device_name", "interleaved", "memory_probe", "peak_rss_delta_mb", "ratios", "summarize", "write_results"]
