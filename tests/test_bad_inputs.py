"""Inputs that hurt, each with the outcome expected: a clear error naming the problem, or a correct result.

Everything is made here: broken image files, extreme sizes, 16-bit and other modes, NaN arrays, odd texts, broken
checkpoints and mistyped paths. The converter's output folder (killed while replacing it) is tested in test_convert.py,
the ONNX opset in test_export.py.
"""

import io
import struct
import tracemalloc
import zlib

import numpy as np
import PIL.Image
import pytest
import torch

import modeling_mobileclip.image_processing_mobileclip as image_processing
from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPModel, MobileCLIPProcessor, MobileCLIPTokenizer
from modeling_mobileclip import convert as convert_module
from modeling_mobileclip.paths import check_local_path, looks_like_local_path

from conftest import randomize_, tiny_config

SOT, EOT = 49406, 49407


def pixels(processor, image) -> np.ndarray:
    return processor(image, return_tensors="np")["pixel_values"][0]


def photo(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width, 1)
    base = np.stack([127 + 120 * np.sin(6 * x + seed), 127 + 120 * np.cos(9 * y), 255 * (x + y) / 2], axis=-1)
    return PIL.Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def png_16bit(values: np.ndarray) -> bytes:
    """A 16-bit PNG (grayscale for (H, W), RGB for (H, W, 3)) written by hand, independently of PIL's encoder."""
    height, width = values.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 0 if values.ndim == 2 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def sixteen_bit_values(height: int = 48, width: int = 64, channels: int = 0, seed: int = 0) -> np.ndarray:
    """Values over the whole 16-bit range, as a real 16-bit photo has (clipping at 255 whitens nearly all of it)."""
    shape = (height, width, channels) if channels else (height, width)
    return np.random.default_rng(seed).integers(0, 65536, shape).astype(np.uint16)


def eight_bit_rgb(values: np.ndarray) -> PIL.Image.Image:
    """What a 16-bit image must become: the top byte of each value, as RGB."""
    return PIL.Image.fromarray((values >> 8).astype(np.uint8)).convert("RGB")


@pytest.fixture(scope="module")
def processor():
    return MobileCLIPImageProcessor()


# --------------------------------------------------------------------------------------------------------------------
# Broken and unusual image files


@pytest.fixture(scope="module")
def jpeg_bytes():
    buffer = io.BytesIO()
    photo(40, 50).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("truncated.jpg", lambda jpeg: jpeg[: len(jpeg) // 2], "image file is truncated"),
        ("empty.jpg", lambda jpeg: b"", "empty file"),
        ("fake.jpg", lambda jpeg: b"<html>not a picture</html>", "not in an image format PIL can identify"),
        ("header-only.jpg", lambda jpeg: jpeg[:20], "image file is truncated|not in an image format"),
    ],
)
def test_broken_image_files_are_errors_naming_the_file(processor, jpeg_bytes, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content(jpeg_bytes))
    with pytest.raises(ValueError, match=rf"Cannot decode the image '{path}': ({message})"):
        processor(str(path))


def test_truncated_pil_image_is_an_error(processor, jpeg_bytes):
    image = PIL.Image.open(io.BytesIO(jpeg_bytes[: len(jpeg_bytes) // 2]))
    with pytest.raises(OSError, match="image file is truncated"):
        processor(image)


def test_one_pixel_image_fills_the_crop(processor):
    out = pixels(processor, PIL.Image.new("RGB", (1, 1), (10, 20, 30)))
    assert out.shape == (3, 256, 256)
    np.testing.assert_allclose(out, np.array([10, 20, 30])[:, None, None] / 255 * np.ones((3, 256, 256)), atol=1e-6)


@pytest.mark.parametrize("size", [(1, 20000), (20000, 1)])
def test_extreme_aspect_ratio_resizes_only_the_crop(processor, size, tmp_path, monkeypatch):
    """A 1x20000 PNG once resized its shortest edge to 256 before cropping: a 256x5,120,000 image (~13.6 GB)."""
    width, height = size
    ramp = np.linspace(0, 255, width * height).reshape(height, width)  # 127.5 at the centre
    path = tmp_path / "strip.png"
    PIL.Image.fromarray(np.dstack([ramp] * 3).astype(np.uint8)).save(path)

    real_resize, resized = PIL.Image.Image.resize, []

    def bounded_resize(self, size, *args, **kwargs):
        resized.append(size[0] * size[1])
        if size[0] * size[1] > image_processing.MAX_RESIZED_PIXELS:  # fail before allocating, not after
            raise MemoryError(f"resize to {size}")
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "resize", bounded_resize)
    tracemalloc.start()
    try:
        out = pixels(processor, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (3, 256, 256)
    assert max(resized) == 256 * 256
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB traced"
    assert np.abs(out * 255 - 127.5).max() <= 1.5  # the centre of the ramp, where the crop is


@pytest.mark.parametrize("variant", ["mobileclip-s2", "mobileclip2-l14"])
def test_crop_region_resize_agrees_with_the_full_resize(variant, monkeypatch):
    """The bounded path (forced here for ordinary sizes) is within a few levels of resizing everything first; PIL
    may run its two passes in the other order for the smaller box, and rounds between them."""
    processor = MobileCLIPImageProcessor.from_variant(variant, do_normalize=False)
    images = [photo(h, w, seed) for seed, (h, w) in enumerate([(480, 640), (300, 257), (1000, 255), (30, 1000)])]
    expected = [pixels(processor, image) for image in images]
    monkeypatch.setattr(image_processing, "MAX_RESIZED_PIXELS", 0)
    for image, reference in zip(images, expected, strict=True):
        diff = np.abs(pixels(processor, image) - reference) * 255
        assert diff.max() <= 8 and diff.mean() < 0.5, (image.size, diff.max(), diff.mean())


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model = randomize_(MobileCLIPModel(tiny_config("mct", context_length=77)))
    image_processor = MobileCLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    model.save_pretrained(path)
    MobileCLIPProcessor(image_processor, MobileCLIPTokenizer()).save_pretrained(path)
    return path


def test_pipelines_are_no_memory_bomb(saved_model, tmp_path, monkeypatch):
    from transformers import pipeline

    path = tmp_path / "strip.png"
    photo(20000, 1).save(path)
    classifier = pipeline("zero-shot-image-classification", model=str(saved_model))
    extractor = pipeline("image-feature-extraction", model=str(saved_model))
    real_resize = PIL.Image.Image.resize

    def bounded_resize(self, size, *args, **kwargs):
        if size[0] * size[1] > image_processing.MAX_RESIZED_PIXELS:
            raise MemoryError(f"resize to {size}")
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "resize", bounded_resize)
    scores = [result["score"] for result in classifier(str(path), candidate_labels=["cat", "dog"])]
    assert len(scores) == 2 and abs(sum(scores) - 1) < 1e-5
    assert np.array(extractor(str(path))).shape == (1, 24)


# --------------------------------------------------------------------------------------------------------------------
# 16-bit and other modes


@pytest.mark.parametrize("channels", [0, 3], ids=["gray", "rgb"])
def test_16_bit_png_path_is_scaled_not_clipped(processor, tmp_path, channels):
    values = sixteen_bit_values(channels=channels)
    path = tmp_path / "deep.png"
    path.write_bytes(png_16bit(values))
    np.testing.assert_array_equal(pixels(processor, str(path)), pixels(processor, eight_bit_rgb(values)))


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_pil_image_is_scaled(processor, mode):
    values = sixteen_bit_values()
    byte_order = "<" if mode == "I;16" else ">"
    image = PIL.Image.frombytes(mode, (64, 48), values.astype(f"{byte_order}u2").tobytes())
    np.testing.assert_array_equal(np.asarray(image), values)
    np.testing.assert_array_equal(pixels(processor, image), pixels(processor, eight_bit_rgb(values)))


def test_16_bit_png_in_training_and_dataset_builder_decoding():
    from dataset_builder.samples import stored_image_bytes
    from dataset_builder.schema import decode_image as builder_decode
    from train.data import decode_image as train_decode

    values = sixteen_bit_values(seed=1)
    data, expected = png_16bit(values), np.asarray(eight_bit_rgb(values))
    np.testing.assert_array_equal(np.asarray(train_decode({"bytes": data, "path": None})), expected)
    rgb = builder_decode(data)
    stored = stored_image_bytes(data, rgb)
    np.testing.assert_array_equal(np.asarray(rgb), expected)
    # Stored re-encoded as the 8-bit image the teachers saw: a reader's convert("RGB") would clip the original.
    reread = PIL.Image.open(io.BytesIO(stored))
    assert reread.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(reread), expected)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_modes_are_refused_everywhere(processor, mode):
    from dataset_builder.schema import decode_image as builder_decode
    from train.data import decode_image as train_decode

    image = PIL.Image.fromarray(np.full((8, 8), 70000, dtype=np.int32 if mode == "I" else np.float32))
    assert image.mode == mode
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    for run in (processor, train_decode, lambda image: builder_decode(buffer.getvalue())):
        with pytest.raises(ValueError, match=f"mode '{mode}'.*range is unknown"):
            run(image)


@pytest.mark.parametrize(
    "name, make",
    [
        ("cmyk.jpg", lambda: photo(50, 40).convert("CMYK")),
        ("rgba.png", lambda: PIL.Image.fromarray(
            np.dstack([np.asarray(photo(50, 40)), np.linspace(0, 255, 2000).reshape(50, 40).astype(np.uint8)]))),
        ("palette.png", lambda: photo(50, 40).convert("P")),
        ("gray-alpha.png", lambda: photo(50, 40).convert("LA")),
    ],
)
def test_other_modes_as_paths_match_convert_rgb(processor, tmp_path, name, make):
    path = tmp_path / name
    make().save(path)
    expected = pixels(processor, PIL.Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(pixels(processor, str(path)), expected)


def test_animated_gif_gives_its_first_frame(processor, tmp_path):
    frames = [PIL.Image.new("RGB", (30, 20), color) for color in ((200, 0, 0), (0, 0, 200))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert PIL.Image.open(path).n_frames == 2
    out = pixels(processor, str(path))
    np.testing.assert_allclose(out, pixels(processor, PIL.Image.open(path).convert("RGB")))
    assert out[0].mean() > 0.7 and out[2].mean() < 0.1  # red: frame 0


@pytest.mark.parametrize(
    "array",
    [np.full((10, 10, 3), np.nan, np.float32), np.where(np.eye(10)[..., None] > 0, np.inf, 0.5).repeat(3, -1),
     torch.full((3, 10, 10), float("nan"))],
    ids=["nan", "inf", "torch-nan"],
)
def test_non_finite_arrays_are_refused(processor, array):
    with pytest.raises(ValueError, match="NaN or infinite"):
        processor(array)


@pytest.mark.parametrize("image", [np.zeros((0, 10, 3), np.uint8), PIL.Image.new("RGB", (0, 5))], ids=["array", "pil"])
def test_empty_images_are_refused(processor, image):
    with pytest.raises(ValueError, match=r"Image of shape \(.*\) is empty"):
        processor(image)


def test_out_of_range_arrays_are_refused(processor):
    with pytest.raises(ValueError, match=r"outside the range \[0, 255\]"):  # transformers' own check
        processor(np.full((10, 10, 3), 40000, np.uint16))


# --------------------------------------------------------------------------------------------------------------------
# Texts


@pytest.fixture(scope="module")
def text_processor():
    return MobileCLIPProcessor.from_variant("mobileclip-s0")


@pytest.mark.parametrize("call", ["tokenizer", "processor"])
def test_texts(text_processor, call):
    def encode(text):  # open_clip's call: 77 tokens, padded with 0 and truncated
        if call == "tokenizer":
            return text_processor.tokenizer(text, padding="max_length", max_length=77, truncation=True,
                                            return_tensors="np")["input_ids"]
        return text_processor(text=text, return_tensors="np")["input_ids"]

    empty = encode("")
    assert empty.shape == (1, 77) and empty[0, :2].tolist() == [SOT, EOT] and not empty[0, 2:].any()
    huge = encode("a cat " * 200_000)
    assert huge.shape == (1, 77) and huge[0, 0] == SOT and huge[0, -1] == EOT  # truncated, EOT kept last
    unicode = ["猫の写真 🐈", "e\u0301te\u0301 ＡＢＣ", "\u200b\x00 tab\tand\nnewline", "ﬁne &amp; dandy"]
    open_clip = pytest.importorskip("open_clip")
    np.testing.assert_array_equal(encode(unicode), open_clip.get_tokenizer("ViT-B-16")(unicode).numpy())
    for bad, type_name in [(3, "int"), (b"a cat", "bytes"), (["a cat", None], "NoneType"), ({"text": "x"}, "dict")]:
        with pytest.raises(TypeError, match=f"type {type_name}"):
            encode(bad)
    with pytest.raises(ValueError, match="empty list"):
        encode([])


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints for the converter


class NotATensor:
    pass


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("empty.pt", lambda path: path.write_bytes(b""), r"Cannot read checkpoint '.*empty\.pt'"),
        ("text.pt", lambda path: path.write_text("weights go here"), r"Cannot read checkpoint '.*text\.pt'"),
        ("truncated.pt", "truncated", r"Cannot read checkpoint '.*truncated\.pt'"),
        ("truncated.safetensors", "truncated", r"Cannot read checkpoint '.*truncated\.safetensors'"),
        ("code.pt", lambda path: torch.save({"x": NotATensor()}, path), r"Cannot read checkpoint '.*code\.pt'"),
        ("tensor.pt", lambda path: torch.save(torch.zeros(3), path), "must hold a state dict .* got a Tensor"),
        ("numbers.pt", lambda path: torch.save({"epoch": 3, "lr": 0.1}, path), r"not tensors: epoch, lr"),
        ("foreign.pt", lambda path: torch.save({"fc.weight": torch.zeros(2, 2)}, path),
         "Unrecognised checkpoint layout"),
    ],
)
def test_broken_checkpoints_are_clear_errors(tmp_path, name, write, message):
    path = tmp_path / name
    if write == "truncated":
        state_dict = {"visual.trunk.stem.weight": torch.randn(64, 64)}
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state_dict, path)
        else:
            torch.save(state_dict, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        write(path)
    with pytest.raises(ValueError, match=message):
        convert_module.convert_checkpoint("mobileclip2-s0", str(path))


# --------------------------------------------------------------------------------------------------------------------
# Mistyped local paths


@pytest.mark.parametrize(
    "name, local",
    [("apple/MobileCLIP-S2", False), ("timm/fastvit_mci2.apple_mclip2_dfndr2b", False), ("org/model-2.7b", False),
     ("gpt2", False), ("hf://datasets/org/name", False), ("/data/set", True), ("./set", True), ("../set", True),
     ("~/set", True), ("data/train/set", True), ("ckpt.pt", True), ("org/model.safetensors", True),
     ("shards.parquet", True), ("my data", True), ("out/", True), ("C:\\data", True)],
)
def test_looks_like_local_path(name, local):
    assert looks_like_local_path(name) is local


def test_check_local_path(tmp_path, monkeypatch):
    check_local_path("apple/MobileCLIP-S2")  # a Hub id: left to the Hub
    check_local_path(str(tmp_path))  # exists
    with pytest.raises(FileNotFoundError, match=r"Dataset '/no/such/folder': no such file or folder\."):
        check_local_path("/no/such/folder", "Dataset")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="`~` is not expanded"):
        check_local_path("~/data")


def test_mistyped_checkpoint_path(tmp_path, capsys):
    missing = str(tmp_path / "mobileclip_s2.pt")
    with pytest.raises(FileNotFoundError, match=f"Checkpoint '{missing}': no such file or folder"):
        convert_module.resolve_checkpoint(missing)
    with pytest.raises(SystemExit) as exit_info:
        convert_module.main(["--variant", "mobileclip-s2", "--checkpoint", missing, "--output", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "no such file or folder" in capsys.readouterr().err


def test_mistyped_train_dataset(tmp_path, monkeypatch):
    from train.data import Reinforcement, load_rows

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="Dataset '/no/such/reinforced': no such file or folder"):
        Reinforcement.load("/no/such/reinforced")
    with pytest.raises(FileNotFoundError, match="Dataset './my_dataset': no such file or folder"):
        load_rows("./my_dataset", "train")


def test_mistyped_builder_input(tmp_path, monkeypatch):
    from dataset_builder.__main__ import load_input, parse_args

    monkeypatch.chdir(tmp_path)
    for name in ("./my_images", "pairs.parquet"):
        with pytest.raises(FileNotFoundError, match=f"Input dataset '{name}': no such file or folder"):
            load_input(parse_args([name, "out"]))
