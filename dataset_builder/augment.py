"""Replayable image augmentations for multi-modal dataset reinforcement (DataCompDR).

Each image gets K augmentations: torchvision ``RandomResizedCrop`` (scale (0.08, 1), ratio (3/4, 4/3)) followed by
torchvision ``RandAugment`` (num_ops 2, magnitude 9, 31 bins, NEAREST, fill None). Their random parameters are drawn
from a per-sample seeded ``torch.Generator`` with exactly the draws torchvision makes from the global RNG, so
``torch.manual_seed(seed)`` followed by K calls of ``Compose([RandomResizedCrop(...), RandAugment()])`` gives the
same images as ``augment_image(image, K, seed)``, and the parameters never depend on process, worker or sample order.

Stored ("compressed") form of one augmentation, as in DataCompDR's ``paug.json["param_aug"][k]`` and Apple's
``training/dr/transforms.py`` (``Compose.compress``)::

    [[i, j, h, w], [[op_index, magnitude], [op_index, magnitude]]]      # or [[i, j, h, w], None]

* ``i, j, h, w``: crop box (top, left, height, width) in pixels of the SOURCE image.
* ``op_index``: index into ``OP_NAMES`` (torchvision's RandAugment op order).
* ``magnitude``: the signed float value handed to the op, i.e. ``_augmentation_space(31, (H, W))[op][0][9]`` times
  the sampled sign (0.0 for ops without magnitude). Posterize stores bits (e.g. 7.0), Solarize the threshold (178.5),
  Rotate degrees, Shear the shear factor, Brightness/Color/Contrast/Sharpness the offset from 1.0.
* TranslateX/TranslateY store a shift in PIXELS of the crop output at sampling resolution (224 for DataCompDR),
  because RandAugment computes them from the post-crop size. Apple's ``reapply`` uses them unchanged at any student
  resolution, and so does ``apply_augmentation`` by default; pass ``translate_ref_size`` to rescale them instead.
* ``None`` as second element: RandAugment was skipped (only possible with ``p < 1``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

# DataCompDR's op order (== torchvision's RandAugment._augmentation_space key order); op_index refers to it.
OP_NAMES = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
NUM_OPS = 2
MAGNITUDE = 9
NUM_MAGNITUDE_BINS = 31
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# DataCompDR configs: random_resized_crop {size 224, interpolation bicubic}; rand_augment keeps torchvision defaults.
DEFAULT_OUTPUT_SIZE = 224
DEFAULT_INTERPOLATION = InterpolationMode.BICUBIC
RAND_AUGMENT_INTERPOLATION = InterpolationMode.NEAREST

Crop = tuple[int, int, int, int]
Ops = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class AugmentationParams:
    """Decompressed parameters of one augmentation.

    Attributes:
        crop: ``(i, j, h, w)`` crop box in source-image pixels.
        ops: ``((op_name, signed_magnitude), ...)`` RandAugment ops in application order, or None if skipped.
    """

    crop: Crop
    ops: Ops | None


def compress(params: AugmentationParams) -> list:
    """Return DataCompDR's JSON-serialisable form ``[[i, j, h, w], [[op_index, magnitude], ...] | None]``."""
    ops = None if params.ops is None else [[OP_NAMES.index(name), float(mag)] for name, mag in params.ops]
    return [[int(v) for v in params.crop], ops]


def decompress(compressed: Sequence[Any]) -> AugmentationParams:
    """Parse DataCompDR's compressed form (lists or tuples, e.g. straight from ``json.loads``).

    Raises:
        ValueError: If the structure or an op index is invalid.
    """
    if len(compressed) != 2 or len(compressed[0]) != 4:
        raise ValueError(f"expected [[i, j, h, w], ops | None], got {compressed!r}")
    crop = tuple(int(v) for v in compressed[0])
    if compressed[1] is None:
        return AugmentationParams(crop, None)
    ops = []
    for op_index, magnitude in compressed[1]:
        if not 0 <= int(op_index) < len(OP_NAMES):
            raise ValueError(f"op index {op_index} out of range [0, {len(OP_NAMES)})")
        ops.append((OP_NAMES[int(op_index)], float(magnitude)))
    return AugmentationParams(crop, tuple(ops))


def seed_for_key(key: str | bytes | int, base_seed: int = 0) -> int:
    """Derive a stable 63-bit per-sample seed from a sample key (e.g. a DataComp uid) and a global seed.

    Uses BLAKE2b rather than ``hash()``, which is salted per process.
    """
    data = key if isinstance(key, bytes) else str(key).encode()
    digest = hashlib.blake2b(data, digest_size=8, key=str(base_seed).encode()).digest()
    return int.from_bytes(digest, "little") >> 1


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    # An int means a square output, as for RandomResizedCrop(size); F.resized_crop alone would keep the aspect ratio.
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_crop(crop: Crop, image_hw: Sequence[int]) -> None:
    """Raises ValueError unless the ``(i, j, h, w)`` box lies inside an image of ``(height, width)`` (a stored box
    replayed on another image, e.g. a re-downloaded one of another size, would otherwise be clipped silently)."""
    i, j, h, w = crop
    if h <= 0 or w <= 0 or i < 0 or j < 0 or i + h > image_hw[0] or j + w > image_hw[1]:
        raise ValueError(f"crop box {tuple(crop)} is not inside a {image_hw[0]}x{image_hw[1]} image")


def _interp(mode: InterpolationMode | str) -> InterpolationMode:
    return mode if isinstance(mode, InterpolationMode) else InterpolationMode(mode.lower())


def sample_crop(
    image_size_hw: Sequence[int],
    generator: torch.Generator,
    scale: Sequence[float] = RRC_SCALE,
    ratio: Sequence[float] = RRC_RATIO,
) -> Crop:
    """Sample a RandomResizedCrop box exactly like ``RandomResizedCrop.get_params``, but from ``generator``.

    Args:
        image_size_hw: Source image ``(height, width)``.
        generator: Random generator; consumed in the same order as torchvision consumes the global RNG.
        scale: Range of the crop area relative to the image area.
        ratio: Range of the crop aspect ratio (width / height).

    Returns:
        ``(i, j, h, w)`` in source pixels, always inside the image (centre-crop fallback after 10 failed tries).
    """
    height, width = int(image_size_hw[0]), int(image_size_hw[1])
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return i, j, h, w
    # Fallback: centre crop clamped to the allowed aspect-ratio range (no random draws, as in torchvision).
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def magnitude_table(output_size_hw: Sequence[int], magnitude: int = MAGNITUDE) -> dict[str, tuple[float, bool]]:
    """Return ``{op_name: (unsigned magnitude, signed)}`` of torchvision's RandAugment at one magnitude bin.

    Values are torchvision's float32 bins converted to Python floats, so they equal what RandAugment applies.
    """
    height, width = int(output_size_hw[0]), int(output_size_hw[1])
    bins = NUM_MAGNITUDE_BINS
    space = {
        "Identity": (None, False),
        "ShearX": (torch.linspace(0.0, 0.3, bins), True),
        "ShearY": (torch.linspace(0.0, 0.3, bins), True),
        "TranslateX": (torch.linspace(0.0, 150.0 / 331.0 * width, bins), True),
        "TranslateY": (torch.linspace(0.0, 150.0 / 331.0 * height, bins), True),
        "Rotate": (torch.linspace(0.0, 30.0, bins), True),
        "Brightness": (torch.linspace(0.0, 0.9, bins), True),
        "Color": (torch.linspace(0.0, 0.9, bins), True),
        "Contrast": (torch.linspace(0.0, 0.9, bins), True),
        "Sharpness": (torch.linspace(0.0, 0.9, bins), True),
        "Posterize": (8 - (torch.arange(bins) / ((bins - 1) / 4)).round().int(), False),
        "Solarize": (torch.linspace(255.0, 0.0, bins), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
    }
    return {name: (0.0 if mags is None else float(mags[magnitude].item()), signed)
            for name, (mags, signed) in space.items()}


def sample_rand_augment(
    output_size_hw: Sequence[int],
    generator: torch.Generator,
    num_ops: int = NUM_OPS,
    magnitude: int = MAGNITUDE,
    p: float = 1.0,
) -> Ops | None:
    """Sample RandAugment ops and signed magnitudes like ``RandAugment.forward``, but from ``generator``.

    Args:
        output_size_hw: Size of the image RandAugment sees (the crop output); sets the translate magnitudes.
        generator: Random generator.
        num_ops: Number of ops applied in sequence.
        magnitude: Magnitude bin (of 31).
        p: Probability of applying RandAugment at all (Apple's extension). The skip draw is only made when
            ``p < 1`` so that the default stream stays identical to plain torchvision.

    Returns:
        ``((op_name, signed_magnitude), ...)``, or None if skipped.
    """
    if p < 1.0 and torch.rand(1, generator=generator).item() > p:
        return None
    table = magnitude_table(output_size_hw, magnitude)
    ops = []
    for _ in range(num_ops):
        name = OP_NAMES[int(torch.randint(len(OP_NAMES), (1,), generator=generator).item())]
        value, signed = table[name]
        # The sign draw only happens for signed ops, matching torchvision's short-circuit `signed and randint(2)`.
        if signed and torch.randint(2, (1,), generator=generator).item():
            value = -value
        ops.append((name, value))
    return tuple(ops)


def sample_augmentations(
    image_size_hw: Sequence[int],
    k: int,
    seed: int,
    output_size: int | Sequence[int] = DEFAULT_OUTPUT_SIZE,
    p: float = 1.0,
    scale: Sequence[float] = RRC_SCALE,
    magnitude: int = MAGNITUDE,
) -> list[AugmentationParams]:
    """Sample K augmentations for one image without touching pixels or the global RNG.

    Args:
        image_size_hw: Source image ``(height, width)``.
        k: Number of augmentations.
        seed: Per-sample seed (see ``seed_for_key``); same seed, same parameters, in any process.
        output_size: Crop output size at sampling time (the teacher resolution); fixes the translate magnitudes.
        p: RandAugment probability.
        scale: RandomResizedCrop area range (DataCompDR's (0.08, 1) by default).
        magnitude: RandAugment magnitude bin, 0 to 30 (DataCompDR's 9 by default); small images may want less.
            Only the stored values change: the random draws, hence the ops chosen, are the same at any magnitude.

    Returns:
        K ``AugmentationParams``; ``compress`` each one for storage.

    Raises:
        ValueError: If ``magnitude`` is not a bin of the 31.
    """
    if not 0 <= magnitude < NUM_MAGNITUDE_BINS:
        raise ValueError(f"magnitude must be a bin in [0, {NUM_MAGNITUDE_BINS}), got {magnitude}")
    generator = torch.Generator().manual_seed(seed)
    out_hw = _size_hw(output_size)
    params = []
    for _ in range(k):
        crop = sample_crop(image_size_hw, generator, scale)
        params.append(AugmentationParams(crop, sample_rand_augment(out_hw, generator, magnitude=magnitude, p=p)))
    return params


def _shear(img, x: float, y: float, interpolation, fill):
    # torchvision converts the RandAugment shear factor to degrees and shears about the top-left corner.
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[x, y], interpolation=interpolation,
                    fill=fill, center=[0, 0])


def _translate(img, dx: int, dy: int, interpolation, fill):
    return F.affine(img, angle=0.0, translate=[dx, dy], scale=1.0, interpolation=interpolation, shear=[0.0, 0.0],
                    fill=fill)


def _smooth(image: Image.Image) -> Image.Image:
    """PIL's ``image.filter(ImageFilter.SMOOTH)`` of an 8-bit image, pixel for pixel, in a third of its time.

    PIL adds the 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 to 0.5 in float and truncates, and copies the border pixels.
    For a weighted sum S of integers, S / 13 + 0.5 is never within 1/26 of an integer, far more than float32's error,
    so PIL's result is exactly floor(S / 13 + 0.5) = (2 S + 13) // 26 on any platform.
    """
    if image.width < 3 or image.height < 3:
        return image.copy()  # as PIL: an image smaller than the kernel is returned unfiltered
    a = np.asarray(image).astype(np.int16)  # 2 S + 13 <= 6643
    s = a[:-2] + a[1:-1] + a[2:]
    s = s[:, :-2] + s[:, 1:-1] + s[:, 2:] + 4 * a[1:-1, 1:-1]
    out = np.array(image)
    out[1:-1, 1:-1] = (2 * s + 13) // 26
    return Image.fromarray(out, image.mode)


def _sharpness(img, factor: float):
    # PIL's ImageEnhance.Sharpness (torchvision's PIL path): a blend of the image with its SMOOTH-filtered copy.
    if isinstance(img, Image.Image) and img.mode in ("L", "RGB"):
        return Image.blend(_smooth(img), img, factor)
    return F.adjust_sharpness(img, factor)


# Same functional calls and arguments as torchvision.transforms.autoaugment._apply_op (private, so not imported),
# except that Sharpness filters PIL images with `_smooth`, PIL's own result computed faster.
_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda img, m, interp, fill: img,
    "ShearX": lambda img, m, interp, fill: _shear(img, math.degrees(math.atan(m)), 0.0, interp, fill),
    "ShearY": lambda img, m, interp, fill: _shear(img, 0.0, math.degrees(math.atan(m)), interp, fill),
    "TranslateX": lambda img, m, interp, fill: _translate(img, int(m), 0, interp, fill),
    "TranslateY": lambda img, m, interp, fill: _translate(img, 0, int(m), interp, fill),
    "Rotate": lambda img, m, interp, fill: F.rotate(img, m, interpolation=interp, fill=fill),
    "Brightness": lambda img, m, interp, fill: F.adjust_brightness(img, 1.0 + m),
    "Color": lambda img, m, interp, fill: F.adjust_saturation(img, 1.0 + m),
    "Contrast": lambda img, m, interp, fill: F.adjust_contrast(img, 1.0 + m),
    "Sharpness": lambda img, m, interp, fill: _sharpness(img, 1.0 + m),
    "Posterize": lambda img, m, interp, fill: F.posterize(img, int(m)),
    "Solarize": lambda img, m, interp, fill: F.solarize(img, m),
    "AutoContrast": lambda img, m, interp, fill: F.autocontrast(img),
    "Equalize": lambda img, m, interp, fill: F.equalize(img),
}


def apply_rand_augment_op(
    image: Image.Image | torch.Tensor,
    op_name: str,
    magnitude: float,
    interpolation: InterpolationMode = RAND_AUGMENT_INTERPOLATION,
) -> Image.Image | torch.Tensor:
    """Apply one RandAugment op with torchvision's ``_apply_op`` semantics (fill None)."""
    return _OPS[op_name](image, magnitude, interpolation, None)


def apply_augmentation(
    image: Image.Image | torch.Tensor,
    params: AugmentationParams | Sequence[Any],
    output_size: int | Sequence[int] = DEFAULT_OUTPUT_SIZE,
    interpolation: InterpolationMode | str = DEFAULT_INTERPOLATION,
    translate_ref_size: int | Sequence[int] | None = None,
) -> Image.Image | torch.Tensor:
    """Replay one stored augmentation: crop the box, resize to ``output_size``, then apply the RandAugment ops.

    Args:
        image: Source image (PIL RGB/L, or a uint8 ``[..., C, H, W]`` tensor), the one the box was sampled on.
        params: ``AugmentationParams`` or the compressed list.
        output_size: Output size; an int gives a square. May differ from the sampling size (student resolution).
        interpolation: Resize interpolation of the crop (DataCompDR: bicubic). RandAugment always uses NEAREST.
        translate_ref_size: None (default) applies translate magnitudes as stored, in pixels, like Apple's
            ``reapply``. Otherwise the sampling output size, and translations are rescaled to ``output_size``.

    Returns:
        The augmented image, same type as ``image``.

    Raises:
        ValueError: If the crop box does not lie inside the image (e.g. a re-downloaded image of another size).
    """
    if not isinstance(params, AugmentationParams):
        params = decompress(params)
    i, j, h, w = params.crop
    check_crop(params.crop, F.get_dimensions(image)[1:])
    out_hw = _size_hw(output_size)
    image = F.resized_crop(image, i, j, h, w, list(out_hw), _interp(interpolation), antialias=True)
    for name, magnitude in params.ops or ():
        if translate_ref_size is not None and name in ("TranslateX", "TranslateY"):
            axis = 1 if name == "TranslateX" else 0
            magnitude = magnitude * out_hw[axis] / _size_hw(translate_ref_size)[axis]
        image = apply_rand_augment_op(image, name, magnitude)
    return image


def augment_image(
    image: Image.Image | torch.Tensor,
    k: int,
    seed: int,
    output_size: int | Sequence[int] = DEFAULT_OUTPUT_SIZE,
    interpolation: InterpolationMode | str = DEFAULT_INTERPOLATION,
    p: float = 1.0,
    magnitude: int = MAGNITUDE,
) -> tuple[list[Image.Image | torch.Tensor], list[AugmentationParams]]:
    """Sample K augmentations for ``image`` and return the augmented images together with their parameters.

    The images are what the teacher sees at sampling time; ``apply_augmentation(image, params[k], output_size)``
    reproduces ``images[k]`` exactly.
    """
    _, height, width = F.get_dimensions(image)
    params = sample_augmentations((height, width), k, seed, output_size=output_size, p=p, magnitude=magnitude)
    images = [apply_augmentation(image, prm, output_size, interpolation) for prm in params]
    return images, params


__all__ = [
    "DEFAULT_INTERPOLATION",
    "DEFAULT_OUTPUT_SIZE",
    "MAGNITUDE",
    "NUM_MAGNITUDE_BINS",
    "NUM_OPS",
    "OP_NAMES",
    "RAND_AUGMENT_INTERPOLATION",
    "RRC_RATIO",
    "RRC_SCALE",
    "AugmentationParams",
    "apply_augmentation",
    "apply_rand_augment_op",
    "augment_image",
    "check_crop",
    "compress",
    "decompress",
    "magnitude_table",
    "sample_augmentations",
    "sample_crop",
    "sample_rand_augment",
    "seed_for_key",
]
