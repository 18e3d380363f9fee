"""The training data pipeline of train/data.py: every sample is its stored augmentation replayed exactly (pixels
equal to a direct `apply_augmentation` of the stored parameters, token ids equal to the tokenizer's), one row at a
time, a batch at a time and streamed."""

import io
import json
import os

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from dataset_builder.augment import AugmentationParams, apply_augmentation, compress, decompress, sample_augmentations
from dataset_builder.schema import ReinforcementMetadata, TeacherInfo, decode_image
from modeling_mobileclip import MobileCLIPTokenizer
from train.data import (
    ImageSpec,
    MapStyleDataset,
    Reinforcement,
    SampleTransform,
    StreamingDataset,
    Tokenize,
    build_train_dataloader,
    load_train_dataset,
)

SIZE, K, N, DIMS = 48, 4, 2, (8, 8)  # student resolution; stored augmentations, synthetic captions, teacher widths
HEIGHT, WIDTH = 240, 320
SPEC = ImageSpec(SIZE, "bicubic")
TOKENIZER = MobileCLIPTokenizer()
CONTEXT = 16
INFO = Reinforcement(K, N, DIMS, (100.0, 100.0))


def natural_pixels(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A photo-like image: 1/f noise (the amplitude spectrum of natural images) with correlated colour channels."""
    rng = np.random.default_rng(seed)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(width), np.fft.fftfreq(height)))
    f[0, 0] = 1.0
    planes = [np.real(np.fft.ifft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f)) for _ in "rgb"]
    x = np.stack([(p - p.mean()) / p.std() for p in planes], -1)
    x = 0.6 * x + 0.4 * x.mean(-1, keepdims=True)
    return np.clip(128 + 48 * x, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "JPEG", mode: str = "RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt, **save)
    return buffer.getvalue()


def rotated_jpeg(pixels: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: decoded rotated by 90°
    return encode(pixels, exif=exif.tobytes())


# Stored images: JPEGs, a grayscale JPEG, a PNG and a JPEG with an EXIF rotation.
IMAGES = [encode(natural_pixels(i)) for i in range(6)] + [
    encode(natural_pixels(6), mode="L"),
    encode(natural_pixels(7), "PNG"),
    rotated_jpeg(natural_pixels(8)),
]


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
    data, cache = write_dataset(str(root / "data")), str(root / "cache")
    return {"root": root, "data": data, "cache": cache,
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




def test_samples_are_the_stored_augmentations_replayed_exactly(assets):
    rows = assets["rows"]
    dataset = MapStyleDataset(rows, transform())
    for epoch in range(3):
        dataset.set_epoch(epoch)
        batch = dataset.__getitems__(list(range(len(rows))))  # a batch: its captions tokenised in one call
        for index, sample in enumerate(batch):
            assert sample["num_skipped"] == 0 and sample["pixel_values"].dtype == torch.float32
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
