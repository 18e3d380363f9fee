"""Tests for dataset_builder.augment: replayable RandomResizedCrop + RandAugment in DataCompDR's stored form."""

import json

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from torchvision.transforms.autoaugment import _apply_op

from dataset_builder.augment import (
    OP_NAMES,
    AugmentationParams,
    apply_augmentation,
    apply_rand_augment_op,
    augment_image,
    compress,
    decompress,
    magnitude_table,
    sample_augmentations,
    sample_crop,
    seed_for_key,
)
from modeling_mobileclip.testing_utils import natural_pixels

SIGNED_OPS = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}


def make_image(height: int, width: int, seed: int = 0) -> Image.Image:
    """Synthetic RGB image: gradients (so geometry and colour ops change it) plus seeded noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) * 2 % 256], axis=-1)
    noise = np.random.default_rng(seed).integers(-40, 41, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def torchvision_replay(image, params: AugmentationParams, size_hw):
    """Independent reference: torchvision's resized_crop and RandAugment's own _apply_op."""
    i, j, h, w = params.crop
    out = F.resized_crop(image, i, j, h, w, list(size_hw), InterpolationMode.BICUBIC, antialias=True)
    for name, magnitude in params.ops or ():
        out = _apply_op(out, name, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
    return out


def assert_same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def json_round_trip(params: AugmentationParams) -> list:
    return json.loads(json.dumps(compress(params)))


# ---------------------------------------------------------------------------------------------------------------------
# Agreement with torchvision


def test_op_order_and_magnitudes_match_torchvision():
    space = T.RandAugment()._augmentation_space(31, (180, 240))
    assert list(space) == list(OP_NAMES)
    for name, (value, signed) in magnitude_table((180, 240)).items():
        mags, tv_signed = space[name]
        assert signed == tv_signed
        assert value == (float(mags[9].item()) if mags.ndim > 0 else 0.0)


@pytest.mark.parametrize("seed, src_hw, out_hw", [(0, (120, 160), (64, 64)), (7, (300, 90), (48, 64)),
                                                  (123, (33, 41), (64, 48)), (2024, (224, 224), (224, 224))])
def test_matches_seeded_torchvision_pipeline(seed, src_hw, out_hw):
    """Seeded sampling reproduces torchvision's own RRC + RandAugment run from torch.manual_seed(seed)."""
    image, k = make_image(*src_hw, seed=seed), 6
    pipeline = T.Compose([T.RandomResizedCrop(out_hw, interpolation=InterpolationMode.BICUBIC), T.RandAugment()])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        expected = [pipeline(image) for _ in range(k)]
    images, params = augment_image(image, k, seed, output_size=out_hw)
    assert len(images) == len(params) == k
    for got, want, prm in zip(images, expected, params):
        assert got.size == (out_hw[1], out_hw[0])
        assert_same(got, want)
        assert_same(apply_augmentation(image, json_round_trip(prm), out_hw), want)


# ---------------------------------------------------------------------------------------------------------------------
# Replay exactness for every op


@pytest.fixture(scope="module")
def sampled_pool():
    image = make_image(96, 128, seed=3)
    images, params = augment_image(image, 96, seed=11, output_size=64)
    return image, images, params


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_replay_each_sampled_op(sampled_pool, op_name):
    """Every op occurs (with both signs if signed); its stored params replay to the sampling-time image exactly."""
    image, images, params = sampled_pool
    hits = [(img, prm) for img, prm in zip(images, params) if op_name in [name for name, _ in prm.ops]]
    assert hits, f"{op_name} never sampled"
    signs = {np.sign(mag) for _, prm in hits for name, mag in prm.ops if name == op_name}
    assert signs == ({-1.0, 1.0} if op_name in SIGNED_OPS else {0.0} if op_name in
                     ("Identity", "AutoContrast", "Equalize") else {1.0})
    for sampled_image, prm in hits:
        replayed = apply_augmentation(image, json_round_trip(prm), 64)
        assert_same(replayed, sampled_image)
        assert_same(replayed, torchvision_replay(image, prm, (64, 64)))


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_replay_each_forced_op(op_name):
    """A hand-built parameter set per op (both signs) matches torchvision exactly at the DataCompDR size."""
    image = make_image(150, 200, seed=5)
    value, signed = magnitude_table((224, 224))[op_name]
    params = AugmentationParams((10, 20, 120, 150), ((op_name, value), (op_name, -value if signed else value)))
    replayed = apply_augmentation(image, json_round_trip(params), 224)
    assert_same(replayed, torchvision_replay(image, params, (224, 224)))
    if op_name not in ("Identity", "AutoContrast"):  # the others visibly change a noisy gradient
        assert not np.array_equal(np.asarray(replayed), np.asarray(torchvision_replay(
            image, AugmentationParams(params.crop, None), (224, 224))))


def test_sharpness_is_pils_pixel_for_pixel():
    """Sharpness filters PIL images with its own SMOOTH (faster than PIL's): the very pixels of PIL's, for RGB and grey
    images of any size (up to 2 px wide, returned unfiltered as by PIL), photo-like or noise, at any factor."""
    rng = np.random.default_rng(0)
    for trial in range(120):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        pixels = natural_pixels(trial, height, width) if trial % 2 else rng.integers(0, 256, (height, width, 3),
                                                                                       dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L" if trial % 3 == 0 else "RGB")
        magnitude = float(rng.uniform(-0.9, 0.9))
        assert_same(apply_rand_augment_op(image, "Sharpness", magnitude), F.adjust_sharpness(image, 1.0 + magnitude))


# ---------------------------------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_params_different_seed_different_params():
    first = sample_augmentations((200, 300), 10, seed=42)
    assert first == sample_augmentations((200, 300), 10, seed=42)
    assert first != sample_augmentations((200, 300), 10, seed=43)
    assert len({p.crop for p in first}) == 10  # augmentations of one image differ from each other


def test_params_independent_of_processing_order_and_global_rng():
    sizes = {f"uid-{n}": (50 + 13 * n, 400 - 29 * n) for n in range(8)}
    forward = {uid: sample_augmentations(hw, 5, seed_for_key(uid)) for uid, hw in sizes.items()}
    state = torch.get_rng_state()
    torch.manual_seed(999)
    shuffled = {}
    for uid in reversed(sizes):
        torch.rand(17)  # unrelated global draws between samples must not matter
        shuffled[uid] = sample_augmentations(sizes[uid], 5, seed_for_key(uid))
    torch.set_rng_state(state)
    assert shuffled == forward
    before = torch.get_rng_state()
    sample_augmentations((64, 64), 3, seed=1)
    assert torch.equal(before, torch.get_rng_state())  # sampling never consumes the global RNG


def test_seed_for_key_is_stable():
    # Hard-coded value: guards against a process-salted hash sneaking in.
    assert seed_for_key("abc") == seed_for_key(b"abc") == 502663924087585347
    assert seed_for_key("abc") != seed_for_key("abd")
    assert seed_for_key("abc") != seed_for_key("abc", base_seed=1)
    assert 0 <= seed_for_key(12345) < 2**63


# ---------------------------------------------------------------------------------------------------------------------
# RandomResizedCrop boxes


@pytest.mark.parametrize("hw", [(1, 1), (1, 2), (2, 2), (3, 7), (5, 300), (300, 5), (17, 1000), (480, 640)])
def test_crop_inside_image_and_equal_to_torchvision(hw):
    height, width = hw
    dummy = torch.empty(3, height, width)
    for seed in range(40):
        i, j, h, w = box = sample_crop(hw, torch.Generator().manual_seed(seed))
        assert 0 < h and 0 < w and 0 <= i and 0 <= j and i + h <= height and j + w <= width
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            assert box == T.RandomResizedCrop.get_params(dummy, [0.08, 1.0], [3 / 4, 4 / 3])


def test_crop_scale_bounds_the_sampled_crops():
    for scale in ((0.08, 1.0), (0.5, 0.7)):
        params = sample_augmentations((300, 400), 300, seed=3, scale=scale)
        areas = [p.crop[2] * p.crop[3] / (300 * 400) for p in params]
        assert scale[0] - 0.01 <= min(areas) < scale[0] + 0.05 and scale[1] - 0.1 < max(areas) <= scale[1] + 0.01
        # The crop is the first draw of each augmentation: same seed, same boxes as torchvision's sampler with scale.
        generator = torch.Generator().manual_seed(3)
        assert params[0].crop == sample_crop((300, 400), generator, scale)


def test_crop_fallback_paths():
    gen = torch.Generator().manual_seed(0)
    # Extreme aspect ratios never fit in 10 tries: centre crop clamped to ratio 4/3 (wide) or 3/4 (tall).
    assert sample_crop((5, 300), gen) == (0, 146, 5, 7)
    assert sample_crop((300, 5), gen) == (146, 0, 7, 5)
    # In-range aspect ratio with an impossible scale: the whole image.
    assert sample_crop((50, 60), gen, scale=(2.0, 3.0)) == (0, 0, 50, 60)
    assert T.RandomResizedCrop.get_params(torch.empty(3, 50, 60), [2.0, 3.0], [3 / 4, 4 / 3]) == (0, 0, 50, 60)
    image = make_image(5, 300)
    images, params = augment_image(image, 4, seed=3, output_size=224)
    for img, prm in zip(images, params):
        assert prm.crop == (0, 146, 5, 7)
        assert img.size == (224, 224)
        assert_same(apply_augmentation(image, compress(prm), 224), img)


# ---------------------------------------------------------------------------------------------------------------------
# Replay at other output sizes


def test_replay_at_two_output_sizes():
    image = make_image(200, 300, seed=9)
    for prm in sample_augmentations((200, 300), 8, seed=5, output_size=224):
        stored = json_round_trip(prm)
        assert apply_augmentation(image, stored, 224).size == (224, 224)
        student = apply_augmentation(image, stored, 256)
        assert student.size == (256, 256)
        # Default replay is Apple's: stored magnitudes, translations in pixels, applied unchanged at any size.
        assert_same(student, torchvision_replay(image, prm, (256, 256)))
        assert apply_augmentation(image, stored, (256, 192)).size == (192, 256)
    tensor = F.pil_to_tensor(image)
    assert apply_augmentation(tensor, stored, 256).shape == (3, 256, 256)


def test_translate_rescaling_option():
    image = make_image(120, 160, seed=2)
    params = AugmentationParams((0, 0, 120, 160), (("TranslateX", -30.45), ("TranslateY", 30.45)))
    same = apply_augmentation(image, params, 224, translate_ref_size=224)
    assert_same(same, apply_augmentation(image, params, 224))
    doubled = AugmentationParams(params.crop, (("TranslateX", -60.9), ("TranslateY", 60.9)))
    assert_same(apply_augmentation(image, params, 448, translate_ref_size=224), torchvision_replay(image, doubled,
                                                                                                    (448, 448)))


# ---------------------------------------------------------------------------------------------------------------------
# Compressed form


def test_compressed_json_round_trip():
    params = sample_augmentations((333, 222), 40, seed=8, p=0.5)
    assert any(p.ops is None for p in params) and any(p.ops is not None for p in params)
    text = json.dumps({"param_aug": [compress(p) for p in params]})  # DataCompDR's paug.json layout
    for prm, stored in zip(params, json.loads(text)["param_aug"]):
        crop, ops = stored
        assert len(crop) == 4 and all(type(v) is int for v in crop)
        if ops is None:
            assert prm.ops is None
        else:
            assert len(ops) == 2 and all(type(o) is int and type(m) is float for o, m in ops)
        assert decompress(stored) == prm
        assert compress(decompress(stored)) == compress(prm)


def test_decompress_datacompdr_record_and_errors():
    record = json.loads("[[12, 30, 180, 200], [[3, -30.45317268371582], [10, 7.0]]]")
    assert decompress(record) == AugmentationParams((12, 30, 180, 200),
                                                    (("TranslateX", -30.45317268371582), ("Posterize", 7.0)))
    assert magnitude_table((224, 224))["TranslateX"] == (30.45317268371582, True)
    assert decompress([[0, 0, 5, 5], None]).ops is None
    with pytest.raises(ValueError):
        decompress([[0, 0, 5, 5], [[14, 0.0], [0, 0.0]]])
    with pytest.raises(ValueError):
        apply_augmentation(make_image(10, 10), [[5, 5, 8, 8], None], 16)
