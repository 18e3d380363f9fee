"""The fastest inference form of a MobileCLIP model on the hardware at hand, in one call.

`optimize_for_inference(model)` fuses the multi-branch blocks (exact), switches to eval mode and then, where the
processor computes bfloat16 natively (x86 CPUs with AVX512-BF16 or AMX, CUDA GPUs from Ampere on), casts the weights to
bfloat16 and stores the convolutional image tower's activations channels-last (oneDNN's and cuDNN's preferred layout
for convolutions). Elsewhere the model stays float32: emulated bfloat16 is slower than float32.

bfloat16 keeps 8 bits of mantissa: embeddings move by about 1e-3 in cosine; how much that changes zero-shot answers on
real images is measured by `benchmarks/precision.py`.

Outside PyTorch, the OpenVINO export (`export --format openvino`, compiled by `export.openvino_model`, bfloat16 where
native) is faster still on x86 CPUs: `benchmarks/latency.py` times both.
"""

import torch


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bfloat16 matrix products in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    # torch.cpu.get_capabilities() (cpuinfo's flags) is not public API: without it, assume no native bfloat16.
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def fastest_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """bfloat16 where `device` has it natively, else float32."""
    return torch.bfloat16 if native_bfloat16(device) else torch.float32


def optimize_for_inference(model, device: str | torch.device = "cpu", dtype: torch.dtype | str = "auto"):
    """Fuses `model` (in place), moves it to `device` in eval mode, in `dtype` (`"auto"`: `fastest_dtype(device)`).

    Works on `MobileCLIPModel` and the single-tower models. Inputs must then be given in the model's dtype
    (`pixel_values.to(model.dtype)`); outputs come in that dtype.
    """
    dtype = fastest_dtype(device) if dtype == "auto" else dtype
    model = model.reparameterize().eval().to(device=device, dtype=dtype)
    if dtype != torch.float32:
        # Conv kernels in reduced precision gain most from the channels-last layout; the text tower has no 4-d weights.
        model = model.to(memory_format=torch.channels_last)
    return model


def pooled_output(output) -> torch.Tensor:
    """The embeddings of a `get_image_features` / `get_text_features` call: transformers 5 returns a
    `BaseModelOutputWithPooling` (its `pooler_output`), transformers 4 and other CLIP-style models the tensor."""
    return getattr(output, "pooler_output", output)


__all__ = ["fastest_dtype", "native_bfloat16", "optimize_for_inference", "pooled_output"]
