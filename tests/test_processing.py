"""MobileCLIPImageProcessor and MobileCLIPProcessor: bit-exact parity with the reference transforms, per-checkpoint
settings, input conversion and errors, save/load."""

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import transforms

open_clip = pytest.importorskip("open_clip")  # test-only reference; the library never imports it

from modeling_mobileclip.configuration_mobileclip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, VARIANTS  # noqa: E402
from modeling_mobileclip.image_processing_mobileclip import MobileCLIPImageProcessor  # noqa: E402
from modeling_mobileclip.processing_mobileclip import MobileCLIPProcessor  # noqa: E402
from modeling_mobileclip.tokenization_mobileclip import MobileCLIPTokenizer  # noqa: E402

# (height, width): square, landscape, portrait, odd sizes, extreme aspect ratios, images smaller than the crop (which
# are upsampled) and 255x1000, whose resized width 1003 puts the crop at 373.5 (torchvision rounds it to 374).
SIZES = [(256, 256), (480, 640), (640, 480), (300, 257), (255, 1000), (1000, 255), (333, 999), (100, 150), (37, 53),
         (224, 300), (5, 1)]  # fmt: skip


def _photo_like(height: int, width: int, seed: int) -> PIL.Image.Image:
    """Smooth colour gradients plus noise: exercises interpolation like a photo without needing sample data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([127 + 120 * np.sin(6 * x + seed), 127 + 120 * np.cos(9 * y), 255 * (x + y) / 2], axis=-1)
    return PIL.Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def images():
    return [_photo_like(h, w, seed) for seed, (h, w) in enumerate(SIZES)]


def _pixels(processor, image) -> torch.Tensor:
    return processor(image, return_tensors="pt")["pixel_values"][0]


@pytest.mark.parametrize("variant", ["mobileclip-s2", "mobileclip-b", "mobileclip2-s4", "mobileclip2-l14"])
def test_matches_open_clip_exactly(images, variant):
    preprocess, size = VARIANTS[variant]["preprocess"], VARIANTS[variant]["vision"]["image_size"]
    reference = open_clip.image_transform(
        size,
        is_train=False,
        mean=preprocess["image_mean"] or (0.0, 0.0, 0.0),
        std=preprocess["image_std"] or (1.0, 1.0, 1.0),
        interpolation=preprocess["resample"],
        resize_mode="shortest",
    )
    processor = MobileCLIPImageProcessor.from_variant(variant)
    for image in images:
        assert torch.equal(_pixels(processor, image), reference(image)), image.size


@pytest.mark.parametrize("size", [256, 224])
def test_matches_apple_transform_exactly(images, size):
    # apple/ml-mobileclip mobileclip/__init__.py: Resize(BILINEAR) + CenterCrop + ToTensor, no normalisation.
    reference = transforms.Compose(
        [
            transforms.Resize(size, transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
        ]
    )
    crop = {"height": size, "width": size}
    processor = MobileCLIPImageProcessor(size={"shortest_edge": size}, crop_size=crop)
    for image in images:
        assert torch.equal(_pixels(processor, image), reference(image)), image.size


def test_defaults():
    processor = MobileCLIPImageProcessor()
    assert processor.size.shortest_edge == 256 and (processor.crop_size.height, processor.crop_size.width) == (256, 256)
    assert processor.resample == PIL.Image.Resampling.BILINEAR
    assert processor.do_rescale and processor.rescale_factor == 1 / 255
    assert not processor.do_normalize and processor.image_mean is None and processor.image_std is None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_from_variant_settings(variant):
    entry = VARIANTS[variant]
    processor = MobileCLIPImageProcessor.from_variant(variant)
    size = entry["vision"]["image_size"]
    assert processor.size.shortest_edge == size
    assert (processor.crop_size.height, processor.crop_size.width) == (size, size)
    assert processor.resample == PIL.Image.Resampling[entry["preprocess"]["resample"].upper()]
    mean = entry["preprocess"]["image_mean"]
    assert processor.do_normalize == (mean is not None)
    if mean is not None:
        assert processor.image_mean == tuple(mean) and processor.image_std == tuple(entry["preprocess"]["image_std"])


def test_from_variant_spot_checks():
    l14 = MobileCLIPImageProcessor.from_variant("MobileCLIP2_L14")  # case and separator are normalised
    assert l14.resample == PIL.Image.Resampling.BICUBIC and l14.size.shortest_edge == 224
    assert l14.do_normalize and l14.image_mean == tuple(OPENAI_CLIP_MEAN) and l14.image_std == tuple(OPENAI_CLIP_STD)
    s2 = MobileCLIPImageProcessor.from_variant("mobileclip-s2")
    assert not s2.do_normalize and s2.size.shortest_edge == 256 and s2.resample == PIL.Image.Resampling.BILINEAR
    assert MobileCLIPImageProcessor.from_variant("mobileclip-b").crop_size.height == 224
    assert MobileCLIPImageProcessor.from_variant("mobileclip-s2", do_center_crop=False).do_center_crop is False
    with pytest.raises(ValueError, match="Unknown MobileCLIP variant"):
        MobileCLIPImageProcessor.from_variant("mobileclip-xl")


def _in_mode(mode: str) -> PIL.Image.Image:
    rng = np.random.default_rng(0)
    rgb = _photo_like(120, 90, seed=3)
    if mode == "RGBA":  # partial transparency: alpha must be dropped (open_clip), not composited onto white
        return PIL.Image.fromarray(np.dstack([np.asarray(rgb), rng.integers(0, 256, (120, 90), dtype=np.uint8)]))
    if mode == "P":
        image = rgb.convert("P")
        image.info["transparency"] = 0
        return image
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV"])
def test_modes_converted_to_rgb_first(mode):
    # Converting before resizing is what Apple's README (`Image.open(path).convert("RGB")`) and open_clip's training
    # loader (`wds.decode("pilrgb")`) feed the model.
    image = _in_mode(mode)
    processor = MobileCLIPImageProcessor()
    assert torch.equal(_pixels(processor, image), _pixels(processor, image.convert("RGB")))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBX", "opaque RGBA"])
def test_modes_match_open_clip(mode):
    # open_clip's eval transform converts *after* resizing and cropping. That only gives the same pixels when the
    # resize commutes with the conversion; for "1"/"P" PIL resizes with NEAREST, translucent RGBA is resized
    # premultiplied and HSV/YCbCr/CMYK are interpolated in their own space, so those differ (documented).
    image = _photo_like(120, 90, seed=3).convert("RGBA") if mode == "opaque RGBA" else _in_mode(mode)
    reference = open_clip.image_transform(256, is_train=False, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear")
    assert torch.equal(_pixels(MobileCLIPImageProcessor(), image), reference(image))


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_modes_rejected(mode):
    image = PIL.Image.new(mode, (64, 48))
    with pytest.raises(ValueError, match=f"mode '{mode}'.*32-bit integer or float"):
        MobileCLIPImageProcessor()(image)


def test_unconvertible_mode_rejected():
    image = PIL.Image.new("La", (64, 48))
    with pytest.raises(ValueError, match="mode 'La' to RGB"):
        MobileCLIPImageProcessor()(image)


def test_numpy_and_torch_inputs(images):
    processor = MobileCLIPImageProcessor()
    image = images[1]
    expected = _pixels(processor, image)
    hwc = np.array(image)
    assert torch.equal(_pixels(processor, hwc), expected)
    assert torch.equal(_pixels(processor, torch.from_numpy(hwc).permute(2, 0, 1)), expected)
    batch = processor([image, hwc], return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 3, 256, 256) and torch.equal(batch[1], expected)


@pytest.mark.parametrize(
    ("bad", "type_name"), [(3, "int"), (None, "NoneType"), (1.5, "float"), ({"image": 1}, "dict"), ([None], "NoneType")]
)
def test_bad_types_rejected(images, bad, type_name):
    with pytest.raises(TypeError, match=f"got {type_name}"):
        MobileCLIPImageProcessor()(bad)


def test_bad_inputs_rejected(images):
    processor = MobileCLIPImageProcessor()
    with pytest.raises(TypeError, match="got int"):
        processor([images[0], 3])
    with pytest.raises(ValueError, match="empty"):
        processor([])
    with pytest.raises(ValueError, match="Incorrect image source"):  # transformers' own message for strings
        processor("not/an/image.jpg")


def test_image_processor_save_load(tmp_path, images):
    processor = MobileCLIPImageProcessor.from_variant("mobileclip2-l14")
    processor.save_pretrained(tmp_path)
    reloaded = MobileCLIPImageProcessor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == processor.to_dict()
    assert torch.equal(_pixels(reloaded, images[1]), _pixels(processor, images[1]))


@pytest.fixture(scope="module")
def processor():
    return MobileCLIPProcessor.from_variant("mobileclip2-l14")


def test_processor_outputs(processor, images):
    texts = ["a photo of a cat", "a dog"]
    out = processor(images=images[:2], text=texts, return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    assert out["input_ids"].shape == (2, 77) and out["pixel_values"].shape == (2, 3, 224, 224)
    assert torch.equal(out["input_ids"], open_clip.get_tokenizer("ViT-B-16")(texts))
    assert torch.equal(out["pixel_values"][0], _pixels(processor.image_processor, images[0]))
    # padding=True pads to the longest text, as transformers' tokenizers do ("a photo of a cat": 7 tokens).
    assert processor(text=texts, padding=True, return_tensors="pt")["input_ids"].shape == (2, 7)
    assert set(processor(images=images[0], return_tensors="pt")) == {"pixel_values"}


def test_processor_types(processor):
    assert isinstance(processor.image_processor, MobileCLIPImageProcessor)
    assert isinstance(processor.tokenizer, MobileCLIPTokenizer)


def test_processor_save_load(processor, images, tmp_path):
    processor.save_pretrained(tmp_path)
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    reloaded = MobileCLIPProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_processor, MobileCLIPImageProcessor)
    assert isinstance(reloaded.tokenizer, MobileCLIPTokenizer)
    assert reloaded.image_processor.to_dict() == processor.image_processor.to_dict()
    inputs = dict(images=images[:2], text=["a cat", "ﬁne &amp; dandy"], return_tensors="pt")
    expected, actual = processor(**inputs), reloaded(**inputs)
    assert all(torch.equal(actual[key], expected[key]) for key in expected)


def test_processor_errors(processor, images):
    with pytest.raises(ValueError, match="neither"):
        processor()
    with pytest.raises(ValueError, match="empty"):
        processor(text=[])
    with pytest.raises(ValueError, match="empty"):
        processor(images=[], text=["a cat"])
    with pytest.raises(TypeError, match="type int"):
        processor(text=["a cat", 1])
    with pytest.raises(TypeError, match="got int"):
        processor(images=3)
