"""The training data pipeline of train/data.py: by default every sample is its stored augmentation replayed exactly
(pixels equal to a direct `apply_augmentation` of the stored parameters, token ids equal to the tokenizer's), one row
at a time, a batch at a time and streamed; `fast_jpeg_decode` decodes JPEGs at reduced size only where the crop box
allows it, within the deviation documented in `SourceImage`, and `fast_resize` resizes crops within the deviation
documented in `resized_crop_uint8`. Pixels come as uint8 (H, W, 3), and `ImageSpec.normalize_batch` turns a loader
batch into exactly the float inputs a per-sample conversion gave."""

import contextlib
import io
import json
import os
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from huggingface_hub.errors import StrictDataclassError
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from dataset_builder.augment import AugmentationParams, apply_augmentation, compress, decompress, sample_augmentations
from dataset_builder.schema import ReinforcementMetadata, TeacherInfo, decode_image
from modeling_mobileclip import MobileCLIPTokenizer
from modeling_mobileclip.testing_utils import natural_pixels
from train.data import (
    ImageSpec,
    MapStyleDataset,
    Reinforcement,
    SampleTransform,
    SourceImage,
    StreamingDataset,
    Tokenize,
    build_train_dataloader,
    dct_scale,
    load_train_dataset,
    replay,
    resized_crop_uint8,
)
from train.evaluate import load_model_and_processor
from train.train import TrainConfig, build_train_data, load_config

from conftest import tiny_config

SIZE, K, N, DIMS = 48, 4, 2, (8, 8)  # student resolution; stored augmentations, synthetic captions, teacher widths
HEIGHT, WIDTH = 240, 320
SPEC = ImageSpec(SIZE, "bicubic")
TOKENIZER = MobileCLIPTokenizer()
CONTEXT = 16
INFO = Reinforcement(K, N, DIMS, (100.0, 100.0))
# SourceImage's documented deviation of reduced decoding from the exact pixels, in 0-255 levels: the mean absolute
# difference of one sample's crop (before RandAugment) and of the whole sample (after it).
MAX_CROP_DEVIATION, MAX_SAMPLE_DEVIATION = 5.0, 12.0


def encode(pixels: np.ndarray, fmt: str = "JPEG", mode: str = "RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt, **save)
    return buffer.getvalue()


def rotated_jpeg(pixels: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: decoded rotated by 90°
    return encode(pixels, exif=exif.tobytes())


# Stored images: JPEGs (reducible), a grayscale JPEG, a PNG and a JPEG with an EXIF rotation (decoded in full).
IMAGES = [encode(natural_pixels(i, HEIGHT, WIDTH)) for i in range(6)] + [
    encode(natural_pixels(6, HEIGHT, WIDTH), mode="L"),
    encode(natural_pixels(7, HEIGHT, WIDTH), "PNG"),
    rotated_jpeg(natural_pixels(8, HEIGHT, WIDTH)),
]
REDUCIBLE = range(7)  # the rows fast_jpeg_decode may reduce


def write_dataset(root: str) -> str:
    """A reinforced dataset in dataset_builder's schema and layout: stored augmentations sampled on the decoded
    image (at the student's size, so that the translations fit it), distinct random teacher embeddings."""
    rng = np.random.default_rng(0)
    meta = ReinforcementMetadata(K, N, tuple(TeacherInfo(f"teacher{t}", d, 100.0) for t, d in enumerate(DIMS)))
    rows = {name: [] for name in meta.features()}
    for i, data in enumerate(IMAGES):
        image = decode_image(data)
        rows["key"].append(f"img-{i}")
        rows["image"].append({"bytes": data, "path": None})
        rows["caption"].append(f"a photo of item {i} on a table")
        rows["syn_captions"].append([f"item {i}, seen from side {j}" for j in range(N)])
        params = sample_augmentations((image.height, image.width), K, seed=i, output_size=SIZE)
        rows["aug_params"].append(json.dumps([compress(p) for p in params]))
        rows["image_emb"].append(rng.standard_normal((K, sum(DIMS))).astype(np.float16))
        rows["text_emb"].append(rng.standard_normal((1 + N, sum(DIMS))).astype(np.float16))
    os.makedirs(os.path.join(root, "data"))
    Dataset.from_dict(rows, features=meta.features()).to_parquet(os.path.join(root, "data",
                                                                              "train-00000-of-00001.parquet"))
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                "    path: data/train-*.parquet\n---\n")
    meta.save(root)
    return root


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_pipeline")
    tiny_config().save_pretrained(root / "tiny")
    data, cache = write_dataset(str(root / "data")), str(root / "cache")
    return {"root": root, "model": str(root / "tiny"), "data": data, "cache": cache,
            "rows": load_train_dataset(data, "train", "reinforced", False, 0, 4, 0, 1, cache)}


def transform(**kwargs) -> SampleTransform:
    return SampleTransform("reinforced", SPEC, Tokenize(TOKENIZER, CONTEXT), 0, INFO, **kwargs)


def token_ids(text: str) -> torch.Tensor:
    return TOKENIZER([text], padding="max_length", max_length=CONTEXT, truncation=True,
                     return_tensors="pt")["input_ids"][0]


def row_of(sample: dict, rows) -> int:
    """The row a sample came from: its real caption's stored embedding is that row's alone."""
    (index,) = [i for i in range(len(rows)) if torch.equal(sample["teacher_text_embeds"],
                                                           torch.from_numpy(rows[i]["text_emb"][0]).float())]
    return index


def aug_index(sample: dict, row: dict) -> int:
    """The stored augmentation a sample replayed: its teacher image embedding is that augmentation's."""
    (k,) = [k for k in range(K) if torch.equal(sample["teacher_image_embeds"],
                                               torch.from_numpy(row["image_emb"][k]).float())]
    return k


def exact_replay(row: dict, k: int, params: AugmentationParams | None = None) -> torch.Tensor:
    """The stored augmentation `k` of `row` replayed directly (what dataset_builder showed its teachers)."""
    params = params or decompress(json.loads(row["aug_params"])[k])
    return SPEC.to_tensor(apply_augmentation(decode_image(row["image"]), params, SIZE, "bicubic"))


def assert_exact(sample: dict, row: dict) -> None:
    assert torch.equal(sample["pixel_values"], exact_replay(row, aug_index(sample, row)))
    assert torch.equal(sample["input_ids"], token_ids(row["caption"]))
    (j,) = [j for j in range(N) if torch.equal(sample["teacher_syn_text_embeds"],
                                               torch.from_numpy(row["text_emb"][1 + j]).float())]
    assert torch.equal(sample["syn_input_ids"], token_ids(row["syn_captions"][j]))


def deviation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two uint8 images, in 0-255 levels."""
    return float((a.float() - b.float()).abs().mean())


# ---------------------------------------------------------------------------------------------------------------------
# The default path: exact


def test_samples_are_the_stored_augmentations_replayed_exactly(assets):
    rows = assets["rows"]
    dataset = MapStyleDataset(rows, transform())
    for epoch in range(3):
        dataset.set_epoch(epoch)
        batch = dataset.__getitems__(list(range(len(rows))))  # a batch: its captions tokenised in one call
        for index, sample in enumerate(batch):
            assert sample["num_skipped"] == 0 and sample["pixel_values"].dtype == torch.uint8
            assert_exact(sample, rows[index])
            # One row at a time gives the same sample.
            alone = dataset[index]
            assert sorted(alone) == sorted(sample) and all(torch.equal(alone[k], sample[k]) for k in sample
                                                           if k != "num_skipped")
        assert len({aug_index(s, rows[i]) for i, s in enumerate(batch)}) > 1


def test_unreadable_rows_of_a_batch_are_replaced_by_the_next(assets):
    rows = [assets["rows"][i] for i in range(4)]  # a plain sequence of rows
    rows[1] = {**rows[1], "image_emb": np.full_like(rows[1]["image_emb"], np.inf)}
    rows[2] = {**rows[2], "image": {"bytes": b"not an image", "path": None}}
    samples = MapStyleDataset(rows, transform()).__getitems__([0, 1, 2, 3])
    assert [s["num_skipped"] for s in samples] == [0, 2, 1, 0]
    assert [row_of(s, rows) for s in samples] == [0, 3, 3, 3]
    for sample in samples:
        assert_exact(sample, rows[row_of(sample, rows)])


def test_loader_batches_and_streams_are_exact(assets):
    rows = assets["rows"]
    seen = set()
    for batch in build_train_dataloader(rows, transform(), 4, 0, streaming=False):
        for b in range(len(batch["pixel_values"])):
            sample = {key: value[b] for key, value in batch.items() if key != "num_skipped"}
            seen.add(index := row_of(sample, rows))
            assert_exact(sample, rows[index])
    assert len(seen) == 8  # drop_last: 2 batches of 4 of the 9 rows
    # Streamed: the captions of up to STREAM_TOKENIZE_CHUNK samples tokenised together, the epoch's rest at its end.
    stream = load_train_dataset(assets["data"], "train", "reinforced", True, 0, 4, 0, 1, assets["cache"])
    samples = iter(StreamingDataset(stream, transform()))
    streamed = [next(samples) for _ in range(len(rows) + 2)]  # into the second pass
    for sample in streamed[:len(rows)]:
        index = row_of(sample, rows)
        assert_exact(sample, rows[index])
        expected = transform()(rows[index], rows[index]["key"], 0)  # a stream's sample ids are the keys
        assert all(torch.equal(sample[k], expected[k]) for k in expected)
    assert sorted(row_of(s, rows) for s in streamed[:len(rows)]) == list(range(len(rows)))


def per_sample_inputs(image: Image.Image, spec: ImageSpec) -> torch.Tensor:
    """The model input of one image as the loader workers used to make it: float in [0, 1], then normalised."""
    pixels = TF.pil_to_tensor(image).float().div_(255.0)
    return pixels if spec.mean is None else TF.normalize(pixels, spec.mean, spec.std, inplace=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_normalize_batch_gives_the_per_sample_inputs_bit_for_bit(assets, device):
    rows = assets["rows"]
    normalised = ImageSpec(SIZE, "bicubic", tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD))
    for spec in (SPEC, normalised):
        loader = build_train_dataloader(
            rows, SampleTransform("reinforced", spec, Tokenize(TOKENIZER, CONTEXT), 0, INFO), 4, 0, streaming=False)
        for batch in loader:
            assert batch["pixel_values"].dtype == torch.uint8
            expected = []
            for b in range(len(batch["pixel_values"])):
                sample = {key: value[b] for key, value in batch.items() if key != "num_skipped"}
                row = rows[row_of(sample, rows)]
                params = decompress(json.loads(row["aug_params"])[aug_index(sample, row)])
                image = apply_augmentation(decode_image(row["image"]), params, SIZE, "bicubic")
                expected.append(per_sample_inputs(image, spec))
            inputs = spec.normalize_batch(batch["pixel_values"].to(device))
            assert inputs.device.type == device and inputs.dtype == torch.float32 and inputs.is_contiguous()
            assert torch.equal(inputs.cpu(), torch.stack(expected))
    assert normalised.normalize_batch(batch["pixel_values"]).min() < 0  # the mean was subtracted
    with pytest.raises(TypeError, match="takes uint8 pixels"):  # already float: not divided by 255 again
        SPEC.normalize_batch(SPEC.normalize_batch(batch["pixel_values"]))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\) pixels .* shape \(4, 3, 48, 48\)"):  # channels first
        SPEC.normalize_batch(batch["pixel_values"].permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------------------------
# fast_jpeg_decode


def test_dct_scale_is_the_largest_that_keeps_the_crop_at_least_the_output_size():
    image = (600, 900)
    assert dct_scale((0, 0, 95, 400), image, 48) == 1  # 95 < 2 x 48
    assert dct_scale((0, 0, 96, 400), image, 48) == 2
    assert dct_scale((10, 20, 200, 191), image, 48) == 2  # the shorter side decides: 191 < 4 x 48
    assert dct_scale((10, 20, 200, 192), image, 48) == 4
    assert dct_scale((0, 0, 600, 900), image, 48) == 8  # never beyond libjpeg's 1/8
    assert dct_scale((0, 0, 600, 900), image, 256) == 2
    assert dct_scale((0, 0, 600, 900), image, 301) == 1
    for outside in ((1, 0, 600, 900), (0, -1, 400, 400), (0, 0, 0, 400), (400, 600, 300, 300)):
        assert dct_scale(outside, image, 48) == 1  # decoded in full, where apply_augmentation refuses the box


def test_reduced_decoding_only_where_the_crop_allows(assets):
    rows = assets["rows"]
    for index, row in enumerate(rows):
        full = decode_image(row["image"])
        exact, fast = SourceImage(row["image"]), SourceImage(row["image"], reduce=True)
        assert (exact.width, exact.height) == (fast.width, fast.height) == full.size  # the boxes' coordinates
        for params in map(decompress, json.loads(row["aug_params"])):
            image, scale = exact.decode(params.crop, SIZE)
            assert scale == 1 and image.tobytes() == full.tobytes()
            image, scale = SourceImage(row["image"], reduce=True).decode(params.crop, SIZE)
            allowed = dct_scale(params.crop, (full.height, full.width), SIZE) if index in REDUCIBLE else 1
            assert scale == allowed
            if scale == 1:  # no reduction: the exact pixels
                assert image.size == full.size and image.tobytes() == full.tobytes()
            else:  # pixel k covers source pixels [k s, (k + 1) s)
                assert image.size == (-(-full.width // scale), -(-full.height // scale)) and image.mode == "RGB"
    # Every crop this small is replayed from the full image, pixel for pixel.
    row = rows[0]
    small = AugmentationParams((10, 20, 2 * SIZE - 1, 150), ((("Rotate", 12.0), ("Equalize", 0.0))))
    image, scale = SourceImage(row["image"], reduce=True).decode(small.crop, SIZE)
    assert scale == 1 and torch.equal(SPEC.to_tensor(replay(image, scale, small, SPEC)), exact_replay(row, 0, small))


def test_fast_decode_deviation_is_within_the_documented_bound(assets):
    rows = assets["rows"]
    crop_deviations, sample_deviations, scales = [], [], []
    for index, row in enumerate(rows):
        for params in map(decompress, json.loads(row["aug_params"])):
            image, scale = SourceImage(row["image"], reduce=True).decode(params.crop, SIZE)
            if scale == 1:
                continue
            scales.append(scale)
            crop = AugmentationParams(params.crop, None)
            crop_deviations.append(deviation(SPEC.to_tensor(replay(image, scale, crop, SPEC)),
                                             exact_replay(row, 0, crop)))
            sample_deviations.append(deviation(SPEC.to_tensor(replay(image, scale, params, SPEC)),
                                               exact_replay(row, 0, params)))
    assert sorted(set(scales)) == [2, 4] and len(scales) >= 10
    assert max(crop_deviations) <= MAX_CROP_DEVIATION and max(sample_deviations) <= MAX_SAMPLE_DEVIATION
    assert 0.5 < np.mean(crop_deviations) <= 3.0 and np.mean(sample_deviations) <= 4.0  # close, but not exact

    # Through the transform: the same choices (augmentation, captions, embeddings) as the exact path; pixels equal
    # where the crop allows no reduction, within the bound where it does.
    exact, fast = MapStyleDataset(rows, transform()), MapStyleDataset(rows, transform(fast_jpeg_decode=True))
    reduced = 0
    for epoch in range(4):
        exact.set_epoch(epoch)
        fast.set_epoch(epoch)
        for index, (a, b) in enumerate(zip(exact.__getitems__(list(range(len(rows)))),
                                           fast.__getitems__(list(range(len(rows)))), strict=True)):
            assert all(torch.equal(a[k], b[k]) for k in a if k not in ("pixel_values", "num_skipped"))
            params = decompress(json.loads(rows[index]["aug_params"])[aug_index(a, rows[index])])
            if index in REDUCIBLE and dct_scale(params.crop, (HEIGHT, WIDTH), SIZE) > 1:
                reduced += 1
                assert 0 < deviation(a["pixel_values"], b["pixel_values"]) <= MAX_SAMPLE_DEVIATION
            else:
                assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert reduced >= 5


# ---------------------------------------------------------------------------------------------------------------------
# fast_resize
# `resized_crop_uint8`'s documented deviation from PIL's resize: at most this many levels at any pixel of a crop, this
# fraction of its pixels different, and this mean absolute difference in a crop and in a sample after RandAugment.
FAST_RESIZE_MAX_LEVELS = {"bilinear": 2, "bicubic": 5}
FAST_RESIZE_MAX_CHANGED, FAST_RESIZE_MAX_CROP_DEVIATION, FAST_RESIZE_MAX_SAMPLE_DEVIATION = 0.05, 0.3, 0.8


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [48, 256])
def test_fast_resize_deviation_is_within_the_documented_bound(interpolation, size):
    spec = ImageSpec(size, interpolation)
    changed, crop_deviations, sample_deviations = [], [], []
    for seed in range(3):
        image = Image.fromarray(natural_pixels(seed, HEIGHT, WIDTH))
        for params in sample_augmentations((HEIGHT, WIDTH), 20, seed, output_size=size):
            crop = AugmentationParams(params.crop, None)
            exact = SPEC.to_tensor(replay(image, 1, crop, spec))
            fast = SPEC.to_tensor(replay(image, 1, crop, spec, True))
            assert fast.shape == exact.shape == (size, size, 3)
            levels = (exact.int() - fast.int()).abs()
            assert levels.max() <= FAST_RESIZE_MAX_LEVELS[interpolation]
            changed.append(float((levels > 0).float().mean()))
            crop_deviations.append(deviation(exact, fast))
            sample_deviations.append(deviation(SPEC.to_tensor(replay(image, 1, params, spec)),
                                               SPEC.to_tensor(replay(image, 1, params, spec, True))))
    assert 0 < np.mean(changed) <= FAST_RESIZE_MAX_CHANGED  # PyTorch's kernel, close to PIL's but not PIL's
    assert max(crop_deviations) <= FAST_RESIZE_MAX_CROP_DEVIATION
    assert max(sample_deviations) <= FAST_RESIZE_MAX_SAMPLE_DEVIATION
    # A box outside the image is refused, as by the exact replay, instead of being clipped by the slicing.
    with pytest.raises(ValueError, match=r"crop box \(200, 0, 100, 100\) is not inside a 240x320 image"):
        replay(image, 1, AugmentationParams((200, 0, 100, 100), None), spec, True)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_fast_resize_is_pytorchs_resize_of_the_crop(interpolation):
    """`resized_crop_uint8`'s channels-last box, bit for bit F.interpolate of the channels-first crop of the image."""
    image = Image.fromarray(natural_pixels(0, HEIGHT, WIDTH))
    mode = InterpolationMode(interpolation)
    for params in sample_augmentations((HEIGHT, WIDTH), 12, 0, output_size=64):
        i, j, h, w = params.crop
        crop = TF.pil_to_tensor(image)[None, :, i:i + h, j:j + w].contiguous()
        for size in (48, 256):
            want = F.interpolate(crop, size=(size, size), mode=interpolation, antialias=True)[0].permute(1, 2, 0)
            assert torch.equal(SPEC.to_tensor(resized_crop_uint8(image, params.crop, size, mode)), want)


def test_fast_resize_changes_only_the_pixels(assets):
    rows = assets["rows"]
    exact, fast = MapStyleDataset(rows, transform()), MapStyleDataset(rows, transform(fast_resize=True))
    deviations = []
    for epoch in range(2):
        exact.set_epoch(epoch)
        fast.set_epoch(epoch)
        for a, b in zip(exact.__getitems__(list(range(len(rows)))), fast.__getitems__(list(range(len(rows)))),
                        strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a if k not in ("pixel_values", "num_skipped"))
            deviations.append(deviation(a["pixel_values"], b["pixel_values"]))
    assert 0 < max(deviations) <= FAST_RESIZE_MAX_SAMPLE_DEVIATION
    with pytest.raises(ValueError, match="fast_resize supports bilinear or bicubic interpolation, not 'nearest'"):
        SampleTransform("reinforced", ImageSpec(SIZE, "nearest"), Tokenize(TOKENIZER, CONTEXT), 0, INFO,
                        fast_resize=True)


# ---------------------------------------------------------------------------------------------------------------------
# The config keys


@pytest.mark.parametrize("key", ["fast_jpeg_decode", "fast_resize"])
def test_fast_replay_config_keys(assets, tmp_path, key):
    assert getattr(TrainConfig(train_dataset="x"), key) is False  # exact unless asked for
    path = tmp_path / "config.yaml"
    path.write_text(f"train_dataset: {assets['data']}\n")
    assert getattr(load_config(str(path), [f"{key}=true"]), key) is True
    for value in ("yes", 1, None):
        with pytest.raises(StrictDataclassError, match=key):
            TrainConfig(train_dataset="x", **{key: value})
    _, processor = load_model_and_processor(assets["model"], random_init=True)
    stub = types.SimpleNamespace(main_process_first=contextlib.nullcontext, process_index=0, num_processes=1)
    for value in (False, True):
        cfg = TrainConfig(model=assets["model"], train_dataset=assets["data"], dataset_cache_dir=assets["cache"],
                          num_workers=0, report_to=["none"], **{key: value})
        loader, _ = build_train_data(cfg, stub, processor, 4)
        assert getattr(loader.dataset.transform, key) is value
