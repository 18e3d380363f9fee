"""MobileCLIPImageProcessorFast (torchvision backend): pixel parity with the PIL MobileCLIPImageProcessor, which is
bit-exact with Apple's and open_clip's transforms (tests/test_processing.py), on photo-like and real images, for every
setting the checkpoints use; the same input handling; registration, save/load and remote code.

Tolerance, in 0-255 levels before normalisation (the difference after normalisation is this divided by 255 * std):
bilinear (every checkpoint but MobileCLIP2-L-14) at most 1 level, bicubic at most 8, and a mean under 0.5 levels.
torchvision's antialiased 8-bit resize is PIL's algorithm with other fixed-point weights, and Pillow >= 13 resizes
some shapes (tall images among them) vertically first where torchvision resizes horizontally first, which moves the
8-bit rounding between the passes: the bicubic bound is met on noise-heavy images, photographs stay within a few
levels. The extreme-aspect-ratio crop-region path is PIL's own, hence exact.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch

from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPImageProcessorFast
from modeling_mobileclip.configuration_mobileclip import VARIANTS

TOLERANCE = {"bilinear": 1, "bicubic": 8}  # levels of 255, max per pixel
MEAN_TOLERANCE = 0.5
VARIANTS_TESTED = ["mobileclip-s2", "mobileclip-b", "mobileclip2-s4", "mobileclip2-l14"]  # 256/224, mean/std, bicubic
SIZES = [(256, 256), (480, 640), (640, 480), (300, 257), (255, 1000), (1000, 255), (333, 999), (100, 150), (37, 53),
         (224, 300), (5, 1), (1, 5)]  # fmt: skip
# Resized images above MAX_RESIZED_PIXELS: only the crop's region of the source is resized.
EXTREME_SIZES = [(1, 20000), (20000, 1), (30000, 300), (64, 40000), (17000, 60)]


def _photo_like(height: int, width: int, seed: int) -> PIL.Image.Image:
    """Smooth colour gradients plus noise, as in tests/test_processing.py."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([127 + 120 * np.sin(6 * x + seed), 127 + 120 * np.cos(9 * y), 255 * (x + y) / 2], axis=-1)
    return PIL.Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def _real_photo():
    """A real photograph (matplotlib's sample image, 512x600 JPEG) and crops of it in other aspect ratios."""
    matplotlib = pytest.importorskip("matplotlib")
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    if not os.path.isfile(path):
        pytest.skip("matplotlib's sample photograph is not installed")
    photo = PIL.Image.open(path).convert("RGB")
    return [photo, photo.crop((0, 0, 600, 150)), photo.crop((100, 0, 230, 512)), photo.resize((1500, 1280))]


def _levels(pil_processor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in 0-255 levels before normalisation."""
    std = torch.tensor(pil_processor.image_std if pil_processor.do_normalize else [1.0, 1.0, 1.0]).view(-1, 1, 1)
    return (a - b).abs() * std * 255


def _assert_close(pil, fast, image, device="cpu", exact=False):
    expected = pil(image, return_tensors="pt")["pixel_values"]
    got = fast(image, return_tensors="pt", device=device)["pixel_values"].cpu()
    assert got.shape == expected.shape and got.dtype == expected.dtype
    diff = _levels(pil, expected[0], got[0])
    limit = 1e-3 if exact else TOLERANCE[pil.resample.name.lower()] + 1e-3
    assert diff.max() <= limit, (getattr(image, "size", None), diff.max().item())
    assert diff.mean() <= (1e-4 if exact else MEAN_TOLERANCE), (getattr(image, "size", None), diff.mean().item())


@pytest.mark.parametrize("variant", VARIANTS_TESTED)
def test_pixel_parity_photo_like(variant):
    pil, fast = MobileCLIPImageProcessor.from_variant(variant), MobileCLIPImageProcessorFast.from_variant(variant)
    for seed, (height, width) in enumerate(SIZES):
        _assert_close(pil, fast, _photo_like(height, width, seed))


@pytest.mark.parametrize("variant", VARIANTS_TESTED)
def test_pixel_parity_real_photo(variant):
    pil, fast = MobileCLIPImageProcessor.from_variant(variant), MobileCLIPImageProcessorFast.from_variant(variant)
    for image in _real_photo():
        _assert_close(pil, fast, image)


@pytest.mark.parametrize("variant", ["mobileclip-s2", "mobileclip2-l14"])
def test_extreme_aspect_ratios_are_exact(variant):
    pil, fast = MobileCLIPImageProcessor.from_variant(variant), MobileCLIPImageProcessorFast.from_variant(variant)
    for seed, (height, width) in enumerate(EXTREME_SIZES):
        _assert_close(pil, fast, _photo_like(height, width, seed), exact=True)


def test_settings_match_the_pil_processor():
    for variant in sorted(VARIANTS):
        pil, fast = MobileCLIPImageProcessor.from_variant(variant), MobileCLIPImageProcessorFast.from_variant(variant)
        pil_dict, fast_dict = pil.to_dict(), fast.to_dict()
        assert fast_dict["image_processor_type"] == "MobileCLIPImageProcessor"  # the backend is chosen at load time
        assert {k: v for k, v in fast_dict.items() if k in pil_dict} == pil_dict, variant


def test_input_types_and_batches():
    pil, fast = MobileCLIPImageProcessor.from_variant("mobileclip2-s4"), MobileCLIPImageProcessorFast.from_variant(
        "mobileclip2-s4")
    images = [_photo_like(h, w, seed) for seed, (h, w) in enumerate([(480, 640), (640, 480), (480, 640)])]
    hwc = np.array(images[0])
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    reference = fast(images[0], return_tensors="pt")["pixel_values"][0]
    for same in (hwc, chw):
        assert torch.equal(fast(same, return_tensors="pt")["pixel_values"][0], reference)
    # Floats in [0, 1] are brought to 8 bits for resizing, and rescaled again by do_rescale, as the PIL processor does.
    _assert_close(pil, fast, hwc.astype(np.float32) / 255)
    _assert_close(pil, fast, torch.from_numpy(hwc.astype(np.float32) / 255).permute(2, 0, 1))
    batch = fast(images, return_tensors="pt")["pixel_values"]  # equal shapes are resized together
    assert batch.shape == (3, 3, 256, 256)
    for image, row in zip(images, batch, strict=True):
        assert torch.equal(row, fast(image, return_tensors="pt")["pixel_values"][0])


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_modes_as_the_pil_processor(mode):
    rgb = _photo_like(120, 90, seed=3)
    if mode == "I;16":
        image = PIL.Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
    elif mode == "RGBA":  # translucent: alpha is dropped by Image.convert("RGB"), not composited onto white
        alpha = np.random.default_rng(0).integers(0, 256, (120, 90), dtype=np.uint8)
        image = PIL.Image.fromarray(np.dstack([np.asarray(rgb), alpha]))
    else:
        image = rgb.convert(mode)
    _assert_close(MobileCLIPImageProcessor(), MobileCLIPImageProcessorFast(), image)


def test_errors_as_the_pil_processor():
    fast = MobileCLIPImageProcessorFast()
    with pytest.raises(ValueError, match="empty"):
        fast([])
    with pytest.raises(TypeError, match="got int"):
        fast([_photo_like(20, 20, 0), 3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fast(np.full((8, 8, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="32-bit integer or float"):
        fast(PIL.Image.new("F", (8, 8)))


def test_auto_image_processor_backends(tmp_path):
    from transformers import AutoImageProcessor

    fast = MobileCLIPImageProcessorFast.from_variant("mobileclip2-l14")
    fast.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path, backend="torchvision")
    assert type(loaded) is MobileCLIPImageProcessorFast and loaded.to_dict() == fast.to_dict()
    assert type(AutoImageProcessor.from_pretrained(tmp_path, use_fast=True)) is MobileCLIPImageProcessorFast
    # Without a backend MobileCLIP loads the PIL processor (bit-exact with the reference transforms).
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is MobileCLIPImageProcessor
    pil = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(pil) is MobileCLIPImageProcessor
    assert {k: v for k, v in loaded.to_dict().items() if k in pil.to_dict()} == pil.to_dict()


def test_fast_processor_as_remote_code(tmp_path):
    # Saved with the package, loaded with trust_remote_code where it is not imported (a Hub user's view).
    MobileCLIPImageProcessorFast.from_variant("mobileclip2-s4").save_pretrained(tmp_path)
    assert (tmp_path / "image_processing_mobileclip_fast.py").is_file()
    script = textwrap.dedent(f"""
        import sys
        from transformers import AutoImageProcessor
        processor = AutoImageProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(processor).__name__ == "MobileCLIPImageProcessorFast", type(processor)
        assert "modeling_mobileclip" not in sys.modules
        print(processor(__import__("numpy").zeros((40, 30, 3), "uint8"), return_tensors="pt")["pixel_values"].shape)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.Size([1, 3, 256, 256])" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", VARIANTS_TESTED)
def test_pixel_parity_on_cuda(variant):
    pil, fast = MobileCLIPImageProcessor.from_variant(variant), MobileCLIPImageProcessorFast.from_variant(variant)
    for seed, (height, width) in enumerate(SIZES):
        _assert_close(pil, fast, _photo_like(height, width, seed), device="cuda")
    for image in _real_photo():
        _assert_close(pil, fast, image, device="cuda")
    for seed, (height, width) in enumerate(EXTREME_SIZES[:2]):
        _assert_close(pil, fast, _photo_like(height, width, seed), device="cuda", exact=True)
    out = fast([_photo_like(480, 640, 0)] * 2, return_tensors="pt", device="cuda")["pixel_values"]
    assert out.device.type == "cuda"


def test_processor_backends(tmp_path):
    from transformers import AutoProcessor

    from modeling_mobileclip import MobileCLIPProcessor

    MobileCLIPProcessor.from_variant("mobileclip2-s4").save_pretrained(tmp_path)
    assert type(AutoProcessor.from_pretrained(tmp_path).image_processor) is MobileCLIPImageProcessor
    fast = AutoProcessor.from_pretrained(tmp_path, backend="torchvision")
    assert type(fast.image_processor) is MobileCLIPImageProcessorFast
    assert type(MobileCLIPProcessor.from_pretrained(tmp_path, use_fast=True).image_processor) is type(
        fast.image_processor)
    image = _photo_like(300, 400, 0)
    pil = AutoProcessor.from_pretrained(tmp_path)
    diff = _levels(pil.image_processor, pil(images=image, return_tensors="pt")["pixel_values"][0],
                   fast(images=image, return_tensors="pt")["pixel_values"][0])
    assert diff.max() <= TOLERANCE["bilinear"] + 1e-3
    with pytest.raises(ValueError, match="backends 'pil' and 'torchvision'"):
        MobileCLIPProcessor.from_pretrained(tmp_path, backend="cv2")
