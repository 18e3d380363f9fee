"""Apple's v2 data options in train/ (open_clip_v2.patch `--dataset-reinforcement-*`): several synthetic-caption sets
chosen by a regex, mixing synthetic captions into the contrastive batch, sequential augmentation choice, a minimum
image size, and online distillation of synthetic captions; each against a direct computation."""

import contextlib
import io
import json
import logging
import os
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from PIL import Image as PILImage
from test_train import DIMS, REPO, Interrupted, K, N, base_config, interrupt_at_micro_batch, make_dataset, read_metrics
from torchvision.transforms import InterpolationMode

from dataset_builder.augment import apply_augmentation, seed_for_key
from dataset_builder.teachers import TeacherEnsemble, TransformersTeacher
from modeling_mobileclip import MobileCLIPModel, MobileCLIPTokenizer
from train.data import (
    DEFAULT_SYN_CAPTIONS_REGEX,
    ImageSpec,
    MapStyleDataset,
    Reinforcement,
    SampleTransform,
    StreamingDataset,
    Tokenize,
    collate,
    load_train_dataset,
    synthetic_caption_sets,
    synthetic_embedding_column,
)
from train.evaluate import load_model_and_processor
from train.train import TrainConfig, build_train_data, compute_loss, load_config, teacher_embeddings, training_function

from conftest import tiny_config

M = 3  # captions of the second set, `syn_captions_coco`
D = sum(DIMS)
SEED = 0
TOKENIZE = Tokenize(MobileCLIPTokenizer(), 16)
SPEC = ImageSpec(32, "bilinear")
INFO = Reinforcement(K, N, DIMS, (100.0, 100.0))


def add_caption_set(root: str, name: str = "coco", size: int = M, embeddings: bool = True) -> str:
    """Adds a second synthetic-caption set `syn_captions_<name>` (+ `syn_text_emb_<name>`) to every shard."""
    rng = np.random.default_rng(1)
    for shard in sorted(os.listdir(os.path.join(root, "data"))):
        path = os.path.join(root, "data", shard)
        table = pq.read_table(path)
        keys = table["key"].to_pylist()
        captions = [[f"{name} caption {key} number {j}" for j in range(size)] for key in keys]
        table = table.append_column(f"syn_captions_{name}", pa.array(captions, pa.list_(pa.string(), size)))
        if embeddings:
            emb = rng.standard_normal((len(keys), size, D)).astype(np.float16)
            column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), D)
            column = pa.FixedSizeListArray.from_arrays(column, size)
            table = table.append_column(f"syn_text_emb_{name}", column)
        pq.write_table(table, path)
    return root


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("option_assets")
    tiny_config().save_pretrained(root / "tiny")
    MobileCLIPModel(tiny_config()).save_pretrained(root / "teacher")
    assets = {
        "root": root,
        "model": str(root / "tiny"),
        "teacher": str(root / "teacher"),
        "two_sets": add_caption_set(make_dataset(root / "two_sets", n=16)),
        "one_set": make_dataset(root / "one_set", n=16, shards=1, corrupt_rows=(5,)),  # row 5: undecodable
        "cache": str(root / "cache"),
    }
    assets["learnable"] = assets["two_sets"]  # base_config's default dataset
    return assets


def load(assets, name="two_sets", syn_sets=("syn_captions", "syn_captions_coco"), streaming=False, recipe="reinforced"):
    return load_train_dataset(assets[name], "train", recipe, streaming, SEED, 8, 0, 1, assets["cache"], syn_sets)


def transform(recipe="reinforced", **kwargs) -> SampleTransform:
    if recipe == "online_distill":
        kwargs.update(teacher=ImageSpec(24, "bicubic"), teacher_tokenize=Tokenize(MobileCLIPTokenizer(), 12))
    return SampleTransform(recipe, SPEC, TOKENIZE, SEED, INFO if recipe == "reinforced" else None, **kwargs)


def generator(uid, epoch) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for_key(f"{epoch}:{uid}", SEED))


def draw(g, n) -> int:
    return int(torch.randint(n, (1,), generator=g))


def set_embeddings(row, syn_set):
    # The layout: `syn_captions` -> text_emb[1:], `syn_captions_<name>` -> syn_text_emb_<name>.
    if syn_set == "syn_captions":
        return np.asarray(row["text_emb"])[1:]
    return np.asarray(row["syn_text_emb_" + syn_set.removeprefix("syn_captions_")])


def assert_tokens(ids, text):
    assert torch.equal(ids, TOKENIZE([text])[0]), text


def assert_embedding(got, want):
    torch.testing.assert_close(got, torch.as_tensor(np.asarray(want, dtype=np.float32)), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Several synthetic-caption sets, chosen by a regex


def test_caption_sets_are_matched_by_regex():
    columns = ["key", "image", "caption", "syn_captions", "text_emb", "syn_captions_dfn_mscoco38k",
               "syn_text_emb_dfn_mscoco38k", "syn_captions_coca", "syn_text_emb_coca", "syn_captionsx"]
    assert synthetic_caption_sets(columns, DEFAULT_SYN_CAPTIONS_REGEX) == ("syn_captions",)
    assert synthetic_caption_sets(columns, "^syn_captions.*$") == (
        "syn_captions", "syn_captions_coca", "syn_captions_dfn_mscoco38k")  # sorted; never an embedding column
    assert synthetic_caption_sets(columns, "^syn_captions_dfn_mscoco38k$") == ("syn_captions_dfn_mscoco38k",)
    assert synthetic_caption_sets(columns, "syn_captions_c") == ("syn_captions_coca",)  # re.match: a prefix
    with pytest.raises(ValueError, match=r"syn_captions_regex '\^syn_text' matches none of the synthetic-caption "
                                         r"columns \['syn_captions', 'syn_captions_coca'"):
        synthetic_caption_sets(columns, "^syn_text", "data/x")
    assert synthetic_embedding_column("syn_captions") is None  # text_emb[1:], as dataset_builder writes it
    assert synthetic_embedding_column("syn_captions_dfn_mscoco38k") == "syn_text_emb_dfn_mscoco38k"


def test_each_sample_draws_a_set_then_a_caption(assets):
    rows = load(assets)
    sets = ("syn_captions", "syn_captions_coco")
    dataset = MapStyleDataset(rows, transform(syn_sets=sets))
    chosen = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in range(0, 16, 3):
            sample, row = dataset[index], rows[index]
            g = generator(str(index), epoch)
            aug = draw(g, K)
            syn_set = sets[draw(g, 2)]
            j = draw(g, len(row[syn_set]))
            chosen.add(syn_set)
            assert_embedding(sample["teacher_image_embeds"], row["image_emb"][aug])
            assert_tokens(sample["input_ids"], row["caption"])
            assert_embedding(sample["teacher_text_embeds"], row["text_emb"][0])
            assert_tokens(sample["syn_input_ids"], row[syn_set][j])
            assert_embedding(sample["teacher_syn_text_embeds"], set_embeddings(row, syn_set)[j])
    assert chosen == set(sets)

    # One matched set draws no set: exactly the samples of today's single `syn_captions`.
    default, only_first = transform(), transform(syn_sets=("syn_captions",))
    for index in (0, 7):
        a, b = default(rows[index], str(index), 3), only_first(rows[index], str(index), 3)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Only the second set (the regex `^syn_captions_coco$`): its captions and embeddings, no set draw.
    sample = transform(syn_sets=("syn_captions_coco",))(rows[2], "2", 1)
    g = generator("2", 1)
    draw(g, K)
    j = draw(g, M)
    assert_tokens(sample["syn_input_ids"], rows[2]["syn_captions_coco"][j])
    assert_embedding(sample["teacher_syn_text_embeds"], rows[2]["syn_text_emb_coco"][j])
    # A set empty in a row is passed over there (no set draw left), and a row with none is skipped as corrupt.
    row = {**rows[3], "syn_captions_coco": [], "syn_text_emb_coco": np.zeros((0, D))}
    sample = transform(syn_sets=sets)(row, "3", 0)
    g = generator("3", 0)
    draw(g, K)
    assert_tokens(sample["syn_input_ids"], row["syn_captions"][draw(g, N)])
    with pytest.raises(ValueError, match="no synthetic caption in any of"):
        transform(syn_sets=("syn_captions_coco",))(row, "3", 0)
    # Embeddings that do not match their captions make the row corrupt.
    broken = {**rows[3], "syn_text_emb_coco": np.asarray(rows[3]["syn_text_emb_coco"])[:2]}
    with pytest.raises(ValueError, match=r"syn_text_emb_coco has shape \(2, 16\), expected \(3, 16\)"):
        transform(syn_sets=sets)(broken, "3", 0)


def test_streamed_sets_keep_their_embeddings(assets, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    stored = {}
    for shard in os.listdir(os.path.join(assets["two_sets"], "data")):
        table = pq.read_table(os.path.join(assets["two_sets"], "data", shard)).to_pylist()
        stored.update({r["key"]: r for r in table})
    rows = load(assets, streaming=True)
    stream = iter(StreamingDataset(rows, transform(syn_sets=("syn_captions_coco",))))
    for _ in range(10):
        sample = next(stream)
        real = sample["teacher_text_embeds"]
        row = next(r for r in stored.values() if np.allclose(np.float32(r["text_emb"][0]), real))
        syn = sample["syn_input_ids"]
        j = [i for i, c in enumerate(row["syn_captions_coco"]) if torch.equal(TOKENIZE([c])[0], syn)]
        assert len(j) == 1
        assert_embedding(sample["teacher_syn_text_embeds"], np.float32(row["syn_text_emb_coco"][j[0]]))


def test_a_set_without_its_embeddings_is_a_clear_error(assets, tmp_path):
    path = add_caption_set(make_dataset(tmp_path / "no_emb", n=4, shards=1), "web", embeddings=False)
    with pytest.raises(ValueError, match=r"lacks the synthetic-caption column\(s\) \['syn_text_emb_web'\]"):
        load_train_dataset(path, "train", "reinforced", False, 0, 8, 0, 1, assets["cache"],
                           ("syn_captions", "syn_captions_web"))
    # online_distill reads the captions only: the teachers embed them.
    rows = load_train_dataset(path, "train", "online_distill", False, 0, 8, 0, 1, assets["cache"],
                              ("syn_captions_web",))
    assert "syn_captions_web" in rows.column_names and "text_emb" not in rows.column_names


# ---------------------------------------------------------------------------------------------------------------------
# Mixing synthetic captions into the contrastive batch


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_mix_synthetic_replaces_the_contrastive_caption_at_the_ratio(assets, ratio):
    rows = load(assets, "one_set", ("syn_captions",))
    mixed = transform(mix_synthetic_ratio=ratio)
    synthetic = 0
    for epoch in range(20):
        for index in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10):
            row, uid = rows[index], str(index)
            sample = mixed(row, uid, epoch)
            g = generator(uid, epoch)
            aug, j = draw(g, K), draw(g, N)
            use_syn = float(torch.rand(1, generator=g)) < ratio  # Apple: `np.random.rand() < ratio`
            synthetic += use_syn
            assert_embedding(sample["teacher_image_embeds"], row["image_emb"][aug])
            assert_tokens(sample["input_ids"], row["syn_captions"][j] if use_syn else row["caption"])
            assert_embedding(sample["teacher_text_embeds"], row["text_emb"][1 + j if use_syn else 0])
            assert "syn_input_ids" not in sample and "teacher_syn_text_embeds" not in sample  # no double loss
            again = transform(mix_synthetic_ratio=ratio)(row, uid, epoch)  # a fresh (resumed) process: same sample
            assert all(torch.equal(sample[k], again[k]) for k in sample)
    assert synthetic == {0.0: 0, 1.0: 200}.get(ratio, synthetic)
    if ratio == 0.3:
        assert 40 <= synthetic <= 80  # 200 draws: 60 ± 3.2 sigma


def test_mixing_without_synthetic_captions_is_an_error():
    empty = Reinforcement(K, 0, DIMS, (100.0, 100.0))
    with pytest.raises(ValueError, match="needs a set of them, got none"):
        SampleTransform("reinforced", SPEC, TOKENIZE, 0, empty, mix_synthetic_ratio=0.5)
    with pytest.raises(ValueError, match="needs a set of them, got none"):
        SampleTransform("reinforced", SPEC, TOKENIZE, 0, INFO, syn_sets=(), sample_sequential=True)


# ---------------------------------------------------------------------------------------------------------------------
# Sequential augmentation choice


def test_sample_sequential_uses_augmentation_epoch_mod_k(assets):
    rows = load(assets)
    sets = ("syn_captions", "syn_captions_coco")
    dataset = MapStyleDataset(rows, transform(syn_sets=sets, sample_sequential=True))
    for epoch in range(2 * K + 1):
        dataset.set_epoch(epoch)
        for index in (0, 4, 9):
            sample, row = dataset[index], rows[index]
            aug_params = json.loads(row["aug_params"])[epoch % K]
            image = PILImage.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
            pixels = SPEC.to_tensor(apply_augmentation(image, aug_params, 32, InterpolationMode.BILINEAR))
            assert torch.equal(sample["pixel_values"], pixels)
            assert_embedding(sample["teacher_image_embeds"], row["image_emb"][epoch % K])
            # The set is still drawn (Apple draws `syn_text_i` at random), the caption is epoch mod its size.
            syn_set = sets[draw(generator(str(index), epoch), 2)]
            j = epoch % len(row[syn_set])
            assert_tokens(sample["syn_input_ids"], row[syn_set][j])
            assert_embedding(sample["teacher_syn_text_embeds"], set_embeddings(row, syn_set)[j])


def test_sample_sequential_counts_passes_of_a_stream(assets, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    rows = load(assets, "one_set", ("syn_captions",), streaming=True)
    table = pq.read_table(os.path.join(assets["one_set"], "data")).to_pylist()
    stream = iter(StreamingDataset(rows, transform(sample_sequential=True)))
    seen = {}
    for _ in range(15 * 3):  # 15 good rows, 3 passes
        sample = next(stream)
        index = next(i for i, r in enumerate(table) if np.allclose(np.float32(r["text_emb"][0]),
                                                                  sample["teacher_text_embeds"]))
        epoch = seen.setdefault(index, -1) + 1  # the k-th time this row is seen is pass k
        seen[index] = epoch
        assert_embedding(sample["teacher_image_embeds"], np.float32(table[index]["image_emb"][epoch % K]))
        assert_tokens(sample["syn_input_ids"], table[index]["syn_captions"][epoch % N])
    assert sorted(seen.values()) == [2] * 15


# ---------------------------------------------------------------------------------------------------------------------
# Minimum image size


def test_filter_image_size_skips_and_counts_small_images(assets, caplog):
    rows = load(assets, "one_set", ("syn_captions",))
    sides = [min(PILImage.open(io.BytesIO(rows[i]["image"]["bytes"])).size) if i != 5 else None for i in range(16)]
    assert sorted(set(sides) - {None}) == [40, 41, 42, 43, 44]  # make_dataset: (40 + i % 5) x 48
    dataset = MapStyleDataset(rows, transform(min_image_size=42))
    with caplog.at_level(logging.WARNING, logger="train.data"):
        for index in range(16):
            # The next row that is readable (not row 5) and large enough (a shorter side of at least 42) stands in.
            offset = next(o for o in range(16) if (s := sides[(index + o) % 16]) is not None and s >= 42)
            sample = dataset[index]
            assert sample["num_skipped"] == offset, index
            assert_embedding(sample["teacher_text_embeds"], rows[(index + offset) % 16]["text_emb"][0])
    assert "Skipping filtered sample row 0: SkippedSample: image 48x40 is smaller than 42" in caplog.text
    assert "Skipping corrupt sample row 5" in caplog.text
    # A shorter side equal to the size passes (Apple: `min(size) >= min_size`); a filter on every image says so.
    assert MapStyleDataset(rows, transform(min_image_size=40))[0]["num_skipped"] == 0
    with pytest.raises(RuntimeError, match="does filter_image_size leave out nearly every image"):
        MapStyleDataset(rows, transform(min_image_size=45))[0]
    # The clip recipe filters too.
    clip = SampleTransform("clip", SPEC, TOKENIZE, 0, min_image_size=42)
    assert MapStyleDataset(rows, clip)[1]["num_skipped"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Online distillation of synthetic captions


NO_AUTOCAST = types.SimpleNamespace(autocast=contextlib.nullcontext, unwrap_model=lambda model: model)


def test_online_distill_teachers_embed_the_synthetic_captions(assets):
    rows = load(assets, "two_sets", ("syn_captions_coco",), recipe="online_distill")
    online = transform("online_distill", syn_sets=("syn_captions_coco",))
    teacher_tokenize = online.teacher_tokenize
    samples = [online(rows[i], str(i), 0) for i in (0, 1, 2, 3)]
    for i, sample in zip((0, 1, 2, 3), samples):
        j = draw(generator(str(i), 0), M)  # the augmentation is seeded apart: the first draw is the caption's
        caption = rows[i]["syn_captions_coco"][j]
        assert_tokens(sample["syn_input_ids"], caption)
        assert torch.equal(sample["teacher_syn_input_ids"], teacher_tokenize([caption])[0])
        assert torch.equal(sample["teacher_input_ids"], teacher_tokenize([rows[i]["caption"]])[0])
    plain = transform("online_distill")(rows[0], "0", 0)  # without sets: today's online sample
    assert set(plain) == {"pixel_values", "input_ids", "teacher_pixel_values", "teacher_input_ids"}
    assert torch.equal(plain["teacher_pixel_values"], samples[0]["teacher_pixel_values"])

    torch.manual_seed(0)
    models = [MobileCLIPModel(tiny_config()).eval(), MobileCLIPModel(tiny_config()).eval()]
    teachers = TeacherEnsemble([TransformersTeacher(m, teacher_tokenize, f"t{i}", 24) for i, m in enumerate(models)])
    batch = collate([{**s, "num_skipped": 0} for s in samples])
    assert batch["teacher_pixel_values"].dtype == torch.uint8  # converted by the step, with the teachers' spec
    targets = teacher_embeddings(teachers, online.teacher, batch, NO_AUTOCAST)

    def direct(ids):
        with torch.no_grad():
            return torch.cat([torch.nn.functional.normalize(m.get_text_features(input_ids=ids).pooler_output, dim=-1)
                              for m in models], dim=1)

    torch.testing.assert_close(targets["teacher_syn_text_embeds"], direct(batch["teacher_syn_input_ids"]),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(targets["teacher_text_embeds"], direct(batch["teacher_input_ids"]), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the images: each teacher's embedding normalised on its own, in teacher order
        pixels = online.teacher.normalize_batch(batch["teacher_pixel_values"])
        images = torch.cat([torch.nn.functional.normalize(m.get_image_features(pixel_values=pixels).pooler_output,
                                                          dim=-1) for m in models], dim=1)
    torch.testing.assert_close(targets["teacher_image_embeds"], images, rtol=1e-5, atol=1e-5)
    # Strings through the teachers' own tokenizer give the embeddings of the loader's token ids.
    captions = [rows[i]["caption"] for i in (0, 1, 2, 3)]
    torch.testing.assert_close(teachers.embed_texts(captions), targets["teacher_text_embeds"], rtol=1e-5, atol=1e-5)
    real_only = {k: v for k, v in batch.items() if "syn" not in k}
    assert set(teacher_embeddings(teachers, online.teacher, real_only, NO_AUTOCAST)) == {
        "teacher_image_embeds", "teacher_text_embeds"}

    # compute_loss hands the loss the student's synthetic-caption features and the teachers' embeddings of them.
    seen = {}

    def loss_fn(image, text, scale, syn_text_features=None, **targets):
        seen.update(targets, syn_text_features=syn_text_features, text=text)
        return {"loss": image.sum()}

    student = MobileCLIPModel(tiny_config())
    batch["pixel_values"] = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    compute_loss(student, batch, loss_fn, ImageSpec(64), teachers, online.teacher, NO_AUTOCAST)
    assert seen["syn_text_features"].shape == seen["text"].shape == (4, student.config.projection_dim)
    torch.testing.assert_close(seen["teacher_syn_text_embeds"], targets["teacher_syn_text_embeds"])


# ---------------------------------------------------------------------------------------------------------------------
# Config keys and the training script


def test_config_keys_are_validated(tmp_path):
    defaults = TrainConfig(train_dataset="x")
    assert (defaults.syn_captions_regex, defaults.mix_synthetic, defaults.mix_synthetic_ratio,
            defaults.sample_sequential, defaults.filter_image_size, defaults.online_distill_syn_captions) == (
        "^syn_captions$", False, 0.0, False, None, False)
    cases = [
        (dict(syn_captions_regex="^syn_captions_(["), r"syn_captions_regex is not a valid regular expression"),
        (dict(mix_synthetic=True, mix_synthetic_ratio=1.5), r"mix_synthetic_ratio must be in \[0, 1\], got 1.5"),
        (dict(mix_synthetic_ratio=0.5), "mix_synthetic_ratio 0.5 needs mix_synthetic: true"),
        (dict(mix_synthetic=True, recipe="clip"), "mix_synthetic set, but recipe 'clip' reads no synthetic captions"),
        (dict(sample_sequential=True, syn_captions_regex="^syn_captions_a$", recipe="online_distill",
              teacher_models=["t"]), "syn_captions_regex, sample_sequential set, but recipe online_distill without "
                                     "online_distill_syn_captions: true reads no synthetic captions"),
        (dict(online_distill_syn_captions=True), "online_distill_syn_captions is for recipe online_distill"),
        (dict(filter_image_size=0), "filter_image_size must be > 0, got 0"),
        (dict(filter_image_size=32.5), r"Field 'filter_image_size' with value 32.5 doesn't match any type"),
    ]
    for values, error in cases:
        with pytest.raises(StrictDataclassError, match=error):
            TrainConfig(train_dataset="x", **values)
    TrainConfig(train_dataset="x", recipe="online_distill", teacher_models=["t"], online_distill_syn_captions=True,
                mix_synthetic=True, mix_synthetic_ratio=1.0, sample_sequential=True)  # the edges are accepted

    cfg = load_config(os.path.join(REPO, "train", "configs", "dfndr12m_b.yaml"))
    assert cfg.syn_captions_regex == "^syn_captions.*$" and cfg.teacher_logit_scale == [70.0, 60.0]
    assert (cfg.global_batch_size, cfg.train_steps, cfg.model) == (8192, 30000, "mobileclip-b")
    assert not cfg.mix_synthetic and not cfg.sample_sequential and cfg.filter_image_size is None


def test_build_train_data_resolves_the_sets(assets):
    _, processor = load_model_and_processor(assets["model"], random_init=True)
    stub = types.SimpleNamespace(main_process_first=contextlib.nullcontext, process_index=0, num_processes=1)
    cfg = TrainConfig(**base_config(assets, assets["root"] / "unused", train_dataset=assets["two_sets"],
                                    syn_captions_regex="^syn_captions.*$", sample_sequential=True))
    loader, _ = build_train_data(cfg, stub, processor, 4)
    assert loader.dataset.transform.syn_sets == ("syn_captions", "syn_captions_coco")
    batch = next(iter(loader))
    assert batch["syn_input_ids"].shape == batch["input_ids"].shape and batch["teacher_syn_text_embeds"].shape == (4, D)
    cfg.syn_captions_regex = "^syn_captions_dfn_mscoco38k$"
    with pytest.raises(ValueError, match="matches none of the synthetic-caption columns"):
        build_train_data(cfg, stub, processor, 4)


def run(assets, output, **overrides) -> dict[int, dict]:
    from accelerate.state import AcceleratorState

    try:
        training_function(TrainConfig(**base_config(assets, output, **overrides)))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # the next in-process run builds a fresh Accelerator
    return read_metrics(output / "metrics.jsonl")[1]


def test_training_with_the_v2_options_resumes_exactly(assets, tmp_path, monkeypatch):
    # Reinforced: two sets, mixing, sequential augmentations and a size filter that leaves out 7 rows of 16. One step
    # is one epoch, so each step replays other augmentations; a resumed run must make the same choices.
    options = dict(train_dataset=assets["two_sets"], train_steps=4, save_every=2, syn_captions_regex="^syn_c",
                   mix_synthetic=True, mix_synthetic_ratio=0.5, sample_sequential=True, filter_image_size=42)
    steps = run(assets, tmp_path / "full", **options)
    assert all(np.isfinite(steps[s]["train/loss"]) for s in range(1, 5))
    # Rows 0, 1, 5, 6, 10, 11, 15 are left out; each epoch their indices skip 2, 1, 2, 1, 2, 1 and 3 rows.
    assert [steps[s]["train/skipped_samples"] for s in range(1, 5)] == [12, 24, 36, 48]
    with monkeypatch.context() as patch, pytest.raises(Interrupted):  # after step 2 and its checkpoint
        interrupt_at_micro_batch(patch, 3)
        run(assets, tmp_path / "crashed", **options)
    resumed = run(assets, tmp_path / "crashed", resume_from_checkpoint="latest", **options)
    for step in range(1, 5):
        assert resumed[step]["train/loss"] == pytest.approx(steps[step]["train/loss"], abs=1e-6, rel=0), step
    assert resumed[4]["train/skipped_samples"] == 48

    # Online distillation of a synthetic caption per sample.
    steps = run(assets, tmp_path / "online", recipe="online_distill", train_dataset=assets["two_sets"],
                teacher_models=[assets["teacher"]], online_distill_syn_captions=True,
                syn_captions_regex="^syn_captions_coco$", train_steps=2, save_every=0)
    assert steps[2]["train/distill_loss"] > 0 and os.path.isfile(tmp_path / "online" / "model.safetensors")
