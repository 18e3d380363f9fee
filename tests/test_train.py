"""Tests of train/: config validation, data (reinforced replay, corrupt samples, streaming split), evaluation metrics
and CLI, and the training script itself, in 2 real gloo processes on CPU with kill-and-resume."""

import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, List, Value
from huggingface_hub import ModelCard
from huggingface_hub.errors import StrictDataclassError
from PIL import Image as PILImage
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dataset_builder.augment import compress, sample_augmentations, sample_crop, seed_for_key
from modeling_mobileclip import MobileCLIPModel, MobileCLIPTokenizer
from train.data import (
    CLIP_CROP_SCALE,
    ImageSpec,
    MapStyleDataset,
    Reinforcement,
    SampleTransform,
    StreamingDataset,
    Tokenize,
    collate,
    decode_image,
    load_train_dataset,
)
from train.evaluate import main as evaluate_main
from train.train import TrainConfig, build_optimizer, load_config, lr_factor, training_function

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIMS, K, N = (8, 8), 3, 2  # two teachers of width 8, 3 stored augmentations, 2 synthetic captions


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: a tiny model config and tiny datasets in dataset_builder's schema


def _png(index: int, corrupt: bool = False) -> dict:
    if corrupt:
        return {"bytes": b"definitely not an image", "path": None}
    rng = np.random.default_rng(index)
    pixels = np.clip(rng.normal(30 * (index % 8), 20, (40 + index % 5, 48, 3)), 0, 255).astype(np.uint8)
    pixels[:, : 6 * (index % 8 + 1)] = 255 - 30 * (index // 8)  # a band whose width and shade identify the image
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _per_teacher_normalized(x: np.ndarray) -> np.ndarray:
    parts = np.split(x, np.cumsum(DIMS)[:-1], axis=-1)
    return np.concatenate([p / np.linalg.norm(p, axis=-1, keepdims=True) for p in parts], axis=-1)


def make_dataset(root, n: int = 32, corrupt_rows=(), reinforced: bool = True, shards: int = 2, augment=True) -> str:
    """Writes parquet shards + README + reinforcement.json like dataset_builder. Teachers agree that image i matches
    caption i (one embedding per sample, plus noise). With `augment=False` every stored augmentation is the whole
    image: then a student learns the targets within a few steps, and a falling loss is not drowned in crop noise."""
    rng = np.random.default_rng(0)
    rows = {"key": [], "image": [], "caption": []}
    if reinforced:
        rows.update(syn_captions=[], aug_params=[], image_emb=[], text_emb=[])
    for i in range(n):
        image = _png(i, corrupt=i in corrupt_rows)
        rows["key"].append(f"{i:05d}")
        rows["image"].append(image)
        rows["caption"].append(f"a photo of object number {i}")
        if not reinforced:
            continue
        rows["syn_captions"].append([f"an image showing item {i} variant {j}" for j in range(N)])
        size = (40 + i % 5, 48)
        params = [compress(p) for p in sample_augmentations(size, K, seed=i)]
        if not augment:
            params = [[[0, 0, *size], [[0, 0.0], [0, 0.0]]]] * K
        rows["aug_params"].append(json.dumps(params))
        anchor = rng.standard_normal(sum(DIMS))
        rows["image_emb"].append(_per_teacher_normalized(anchor + 0.1 * rng.standard_normal((K, sum(DIMS)))))
        rows["text_emb"].append(_per_teacher_normalized(anchor + 0.1 * rng.standard_normal((1 + N, sum(DIMS)))))
    features = {"key": Value("string"), "image": Image(), "caption": Value("string")}
    if reinforced:
        features.update(
            syn_captions=List(Value("string"), length=N),
            aug_params=Value("string"),
            image_emb=List(List(Value("float16"), length=sum(DIMS)), length=K),
            text_emb=List(List(Value("float16"), length=sum(DIMS)), length=1 + N),
        )
    dataset = Dataset.from_dict(rows, features=Features(features))
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    for s in range(shards):
        path = os.path.join(root, f"data/train-{s:05d}-of-{shards:05d}.parquet")
        dataset.shard(shards, s, contiguous=True).to_parquet(path)
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                "    path: data/train-*.parquet\n---\n")
    if reinforced:
        meta = {
            "num_augmentations": K, "num_synthetic_captions": N, "embedding_dim": sum(DIMS), "dtype": "float16",
            "teachers": [{"name": f"teacher{t}", "dim": d, "logit_scale": 100.0} for t, d in enumerate(DIMS)],
            "augmentation": {"teacher_resolution": 224}, "seed": 0, "source": "test",
        }
        with open(os.path.join(root, "reinforcement.json"), "w") as f:
            json.dump(meta, f)
    return str(root)


def make_eval_datasets(root) -> tuple[str, str]:
    """A 3-class labelled set (zero-shot) and a 6-image set with 2 captions each (retrieval), as parquet folders."""
    images = [PILImage.open(io.BytesIO(_png(i)["bytes"])) for i in range(6)]
    zeroshot = Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(6)]},
        features=Features({"image": Image(), "label": ClassLabel(names=["red_thing", "green thing", "blue thing"])}),
    )
    retrieval = Dataset.from_dict(
        {"image": images, "caption": [[f"object {i}", f"thing number {i}"] for i in range(6)]},
        features=Features({"image": Image(), "caption": List(Value("string"))}),
    )
    paths = []
    for name, dataset in (("zeroshot", zeroshot), ("retrieval", retrieval)):
        os.makedirs(os.path.join(root, name, "data"), exist_ok=True)
        dataset.to_parquet(os.path.join(root, name, "data", "test-00000-of-00001.parquet"))
        paths.append(os.path.join(root, name))
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_assets")
    tiny_config().save_pretrained(root / "tiny")  # config only: the script initialises random weights
    teacher = MobileCLIPModel(tiny_config())
    teacher.save_pretrained(root / "teacher")
    zeroshot, retrieval = make_eval_datasets(root / "eval")
    return {
        "root": root,
        "model": str(root / "tiny"),
        "teacher": str(root / "teacher"),
        "reinforced": make_dataset(root / "reinforced", corrupt_rows=(5,)),
        "learnable": make_dataset(root / "learnable", n=16, corrupt_rows=(5,), augment=False),
        "plain": make_dataset(root / "plain", n=16, reinforced=False),
        "zeroshot": zeroshot,
        "retrieval": retrieval,
        "cache": str(root / "cache"),
    }


def write_config(path, **values) -> str:
    with open(path, "w") as f:
        json.dump(values, f)  # JSON is YAML
    return str(path)


def read_metrics(path) -> tuple[list[dict], dict[int, dict]]:
    """(config records, metrics per step) of a metrics.jsonl. Training and evaluation log separate records for a step,
    and a resumed run appends after the crashed one: later values win."""
    configs, steps = [], {}
    for record in map(json.loads, open(path)):
        if "config" in record:
            configs.append(record["config"])
        else:
            steps.setdefault(record["step"], {}).update(record)
    return configs, steps


def base_config(assets, output_dir, **overrides) -> dict:
    config = dict(
        model=assets["model"], train_dataset=assets["learnable"], dataset_cache_dir=assets["cache"],
        output_dir=str(output_dir), num_workers=0, global_batch_size=16, train_steps=6, warmup_steps=1, lr=1.0e-4,
        mixed_precision="no", save_every=2, log_every=1, report_to=["none"],
    )
    return {**config, **overrides}


# ---------------------------------------------------------------------------------------------------------------------
# The script in two real processes


class Interrupted(Exception):
    """Raised by a test's hook where a real run would be killed."""


def interrupt_at_micro_batch(monkeypatch, n: int) -> None:
    """Makes in-process training raise Interrupted at its n-th micro-batch (step n without gradient accumulation),
    after everything steps 1 .. n-1 wrote, as a run killed there leaves it (but for the final save)."""
    import train.train as train_module

    compute_loss, calls = train_module.compute_loss, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Interrupted(f"micro-batch {n}")
        return compute_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", interrupted)


# train.py, its processes killed with SIGKILL (no handler, no cleanup, as on a preempted machine) when each reaches
# its KILL_AT_MICRO_BATCH-th micro-batch: all of the previous steps are done, checkpoints included.
KILLED_AT = textwrap.dedent("""
    import os, signal
    import train.train as train_module

    compute_loss, calls = train_module.compute_loss, []


    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(os.environ["KILL_AT_MICRO_BATCH"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return compute_loss(*args, **kwargs)


    train_module.compute_loss = killed
    train_module.main()
""")


def launch(config_path: str, *overrides: str, kill_at_micro_batch: int | None = None) -> subprocess.CompletedProcess:
    script = os.path.join(REPO, "train", "train.py")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": REPO,
           # One compute thread per process whatever the caller's environment: two processes on two cores.
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           # A native crash (SIGSEGV) prints every thread's Python stack into the log the assertion shows.
           "PYTHONFAULTHANDLER": "1"}
    if kill_at_micro_batch:
        script = os.path.join(os.path.dirname(config_path), "killed_at.py")
        with open(script, "w") as f:
            f.write(KILLED_AT)
        env["KILL_AT_MICRO_BATCH"] = str(kill_at_micro_batch)
    # ACCELERATE_USE_CPU=1 + --multi_gpu is what gives two gloo processes on CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--num_cpu_threads_per_process", "1", script, "--config", config_path, *overrides]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout[-3000:] + result.stderr[-6000:]
    if kill_at_micro_batch:
        assert result.returncode != 0 and "SIGKILL" in result.stderr, log
    else:
        assert result.returncode == 0, log
    return result


def test_two_processes_loss_falls_and_resume_reproduces_losses(assets, tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    # The uninterrupted run decodes in a worker process and logs to TensorBoard too. Both runs save the moving average
    # of the weights, which every process keeps and the resumed one reloads.
    config = write_config(tmp_path / "full.yaml", **base_config(assets, full, num_workers=1, report_to=["tensorboard"],
                                                                ema_decay=0.5))
    launch(config)
    configs, steps = read_metrics(full / "metrics.jsonl")
    assert configs[0]["world_size"] == 2 and configs[0]["per_device_batch_size"] == 8
    assert "MULTI_CPU" in configs[0]["distributed"]
    losses = [steps[s]["train/loss"] for s in range(1, 7)]
    assert all(math.isfinite(x) for x in losses)
    # Each step sees all 16 samples (one epoch), so the loss reflects learning rather than the batch drawn.
    assert losses[-1] < losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert steps[6]["train/skipped_samples"] >= 1  # row 5 is corrupt: skipped and counted, not a crash
    assert steps[1]["train/lr"] == pytest.approx(1e-4) and steps[6]["train/lr"] < steps[2]["train/lr"]
    assert [steps[s]["train/epoch"] for s in (1, 6)] == [0, 5]
    assert sorted(os.listdir(full / "checkpoints")) == ["checkpoint_0", "checkpoint_1", "checkpoint_2"]
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(full / "logs") for name in files)
    model = MobileCLIPModel.from_pretrained(full)  # the final model and processor, saved with save_pretrained
    assert 0 < model.logit_scale.item() <= math.log(100) + 1e-6
    assert os.path.isfile(full / "processor_config.json")

    # Killed after step 3 (last checkpoint: step 2), then resumed from the latest checkpoint. Without workers and with
    # activation checkpointing under DDP, neither of which may change a number.
    config = write_config(tmp_path / "crashed.yaml", **base_config(assets, crashed, gradient_checkpointing=True,
                                                                   ema_decay=0.5))
    launch(config, kill_at_micro_batch=4)
    assert not os.path.exists(crashed / "model.safetensors")
    assert sorted(os.listdir(crashed / "checkpoints")) == ["checkpoint_0"]
    launch(config, "resume_from_checkpoint=latest")
    _, resumed = read_metrics(crashed / "metrics.jsonl")
    for step in range(1, 7):
        assert resumed[step]["train/loss"] == pytest.approx(steps[step]["train/loss"], abs=1e-6, rel=0), step
        assert resumed[step]["train/lr"] == pytest.approx(steps[step]["train/lr"], abs=1e-12), step
    # The resumed run's checkpoints continue the numbering instead of colliding with checkpoint_0.
    assert sorted(os.listdir(crashed / "checkpoints")) == ["checkpoint_0", "checkpoint_1", "checkpoint_2"]
    # Parameters only: recomputing a checkpointed forward updates BatchNorm running statistics a second time.
    trained = dict(MobileCLIPModel.from_pretrained(crashed).named_parameters())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter, trained[name], rtol=0, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# Baselines and evaluation, in this process


@pytest.fixture
def reset_accelerate():
    """Each in-process run builds a fresh Accelerator; accelerate's shared state must not leak between them."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_clip_recipe_with_periodic_evaluation_and_cli(assets, tmp_path, reset_accelerate):
    output = tmp_path / "clip"
    cfg = TrainConfig(**base_config(
        assets, output, recipe="clip", train_dataset=assets["plain"], train_steps=2, save_every=0, eval_every=1,
        eval_zeroshot_dataset=assets["zeroshot"], eval_zeroshot_split="test", eval_templates=["a {}.", "the {}."],
        eval_retrieval_dataset=assets["retrieval"], eval_batch_size=4,
    ))
    training_function(cfg)
    _, steps = read_metrics(output / "metrics.jsonl")
    assert steps[2]["train/distill_loss"] == 0 and steps[2]["train/loss"] > 0
    for step in (1, 2):
        assert 0 <= steps[step]["eval/zeroshot/top1"] <= 1
        assert 0 <= steps[step]["eval/retrieval/text_to_image_R@1"] <= steps[step]["eval/retrieval/text_to_image_R@5"]
    assert "eval/zeroshot/top5" not in steps[2]  # only 3 classes
    # The model card records the recipe and the final evaluation as model-index entries.
    card = ModelCard.load(output / "README.md")
    results = {(r.task_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("zero-shot-image-classification", "top1")] == steps[2]["eval/zeroshot/top1"]
    assert results[("image-text-retrieval", "mean_recall")] == steps[2]["eval/retrieval/mean_recall"]
    assert "recipe `clip`" in card.text and "2 steps x" in card.text
    # The CLI on the saved model gives the end-of-training numbers (same model, same data, same prompts).
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(["a {}.", "the {}."]))
    metrics = evaluate_main(["--model", str(output), "--dataset", assets["zeroshot"], "--templates", str(templates),
                             "--num-workers", "0", "--cache-dir", assets["cache"]])
    assert metrics["zeroshot/top1"] == pytest.approx(steps[2]["eval/zeroshot/top1"])
    metrics = evaluate_main(["--model", str(output), "--dataset", assets["retrieval"], "--num-workers", "0",
                             "--cache-dir", assets["cache"]])
    assert metrics["retrieval/mean_recall"] == pytest.approx(steps[2]["eval/retrieval/mean_recall"])


def test_online_distillation_recipe(assets, tmp_path, reset_accelerate):
    output = tmp_path / "online"
    cfg = TrainConfig(**base_config(assets, output, recipe="online_distill", train_dataset=assets["plain"],
                                    teacher_models=[assets["teacher"]], train_steps=2, save_every=0))
    training_function(cfg)
    _, steps = read_metrics(output / "metrics.jsonl")
    assert steps[2]["train/distill_loss"] > 0 and steps[2]["train/contrastive_loss"] == 0  # weights (0, 1)
    assert os.path.isfile(output / "model.safetensors")


# ---------------------------------------------------------------------------------------------------------------------
# Config validation


def test_config_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("train_dataset: x\nlr: 1e-3\nmixed_precision: no\nmax_grad_norm: 0\n")
    cfg = load_config(good, ["warmup_steps=10", "loss_weights=[0.25, 0.75]", "eps=1e-6", "push_to_hub=true"])
    # YAML 1.1 would read 1e-3 as a string and `no` as false; the loader reads YAML 1.2 (JSON) scalars.
    assert cfg.lr == 1e-3 and cfg.eps == 1e-6 and cfg.mixed_precision == "no" and cfg.max_grad_norm == 0
    assert cfg.warmup_steps == 10 and cfg.loss_weights == [0.25, 0.75] and cfg.push_to_hub is True
    with pytest.raises(ValueError, match="Unknown config key 'warmup_step'; did you mean 'warmup_steps'"):
        load_config(good, ["warmup_step=100"])
    with pytest.raises(ValueError, match="Unknown config key 'learning_rate'; the keys are the fields of TrainConfig"):
        load_config(good, ["learning_rate=0.1"])
    with pytest.raises(StrictDataclassError, match="Field 'train_steps' expected int, got str"):
        load_config(good, ["train_steps=many"])
    with pytest.raises(StrictDataclassError, match="Field 'train_steps' expected int, got bool"):
        load_config(good, ["train_steps=true"])
    with pytest.raises(StrictDataclassError, match="Field 'loss_weights' expected a list, got float"):
        load_config(good, ["loss_weights=0.5"])
    with pytest.raises(StrictDataclassError, match="Field 'push_to_hub' expected bool, got str"):
        load_config(good, ["push_to_hub=yes"])  # a string in YAML 1.2, not silently true
    with pytest.raises(ValueError, match="must look like key=value"):
        load_config(good, ["lr"])
    with pytest.raises(StrictDataclassError, match=r"Field 'recipe' expected one of \('reinforced', 'clip'"):
        TrainConfig(train_dataset="x", recipe="distill")
    with pytest.raises(StrictDataclassError, match="warmup_steps must be >= 0") as error:  # every bad value at once
        TrainConfig(train_dataset="x", warmup_steps=-1, beta2=1.0)
    assert "beta2 must be in [0, 1)" in str(error.value)
    with pytest.raises(StrictDataclassError, match="online_distill needs teacher_models"):
        TrainConfig(train_dataset="x", recipe="online_distill")
    with pytest.raises(StrictDataclassError, match="train_dataset is required"):
        TrainConfig()
    with pytest.raises(StrictDataclassError, match=r"crop_scale must be \[min, max\] with 0 < min <= max <= 1"):
        TrainConfig(train_dataset="x", crop_scale=[0.5, 1.2])
    with pytest.raises(StrictDataclassError, match="report_to has unknown trackers"):
        TrainConfig(train_dataset="x", report_to=["tensorbored"])
    if importlib.util.find_spec("wandb") is None:  # accelerate itself would drop it silently
        with pytest.raises(StrictDataclassError, match=r"report_to: \['wandb'\] requested but not installed"):
            TrainConfig(train_dataset="x", report_to=["wandb"])
    cfg = TrainConfig(train_dataset="x")
    with pytest.raises(StrictDataclassError, match="Field 'lr' .* expected float"):  # checked on assignment too
        cfg.lr = "fast"
    for name in os.listdir(os.path.join(REPO, "train", "configs")):
        load_config(os.path.join(REPO, "train", "configs", name))


def test_optimizer_groups_and_schedule():
    model = MobileCLIPModel(tiny_config())
    cfg = TrainConfig(train_dataset="x", warmup_steps=10, train_steps=110)
    decay, no_decay = build_optimizer(model, cfg).param_groups
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0 and decay["eps"] == 1e-8
    assert decay["betas"] == (0.9, 0.95)
    assert any(p is model.logit_scale for p in no_decay["params"])
    assert all(p.ndim >= 2 for p in decay["params"])
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == 1.0
    assert lr_factor(60, cfg) == pytest.approx(0.5) and lr_factor(110, cfg) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Data


def _transform(recipe="reinforced", seed=0, num_synthetic=N) -> SampleTransform:
    info = Reinforcement(K, num_synthetic, DIMS, (100.0, 100.0))
    return SampleTransform(recipe, ImageSpec(64, "bicubic"), Tokenize(MobileCLIPTokenizer(), 16), seed, info)


def test_reinforced_samples_are_replayed_and_reproducible(assets):
    rows = load_train_dataset(assets["reinforced"], "train", "reinforced", False, 0, 10, 0, 1, assets["cache"])
    dataset = MapStyleDataset(rows, _transform())
    sample = dataset[0]
    assert sample["pixel_values"].shape == (64, 64, 3) and sample["input_ids"].shape == (16,)  # (H, W, C)
    assert sample["input_ids"][0] == 49406 and sample["input_ids"].max() == 49407
    # The teacher targets are rows of the stored embeddings: image_emb[aug], text_emb[0], text_emb[1 + syn].
    row = rows[0]
    assert any(torch.allclose(sample["teacher_image_embeds"], torch.tensor(e)) for e in row["image_emb"])
    assert torch.allclose(sample["teacher_text_embeds"], torch.tensor(row["text_emb"][0]))
    assert any(torch.allclose(sample["teacher_syn_text_embeds"], torch.tensor(e)) for e in row["text_emb"][1:])
    # Same (seed, epoch, index): same sample; the choices change with the epoch.
    again = MapStyleDataset(rows, _transform())[0]
    assert all(torch.equal(sample[k], again[k]) for k in sample if k != "num_skipped")
    picks = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        picks.add(tuple(dataset[0]["teacher_image_embeds"][:2].tolist()))
    assert len(picks) > 1
    # A dataset without synthetic captions (N = 0) gives samples without the synthetic-caption batch.
    no_synthetic = _transform(num_synthetic=0)({**row, "syn_captions": [], "text_emb": row["text_emb"][:1]}, "0", 0)
    assert "syn_input_ids" not in no_synthetic and "teacher_syn_text_embeds" not in no_synthetic


def test_clip_recipe_crops_like_open_clip():
    # open_clip's training RandomResizedCrop (scale (0.9, 1) unless configured), drawn from the per-sample generator.
    image = PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    row = {"image": {"bytes": buffer.getvalue(), "path": None}, "caption": "a cat"}
    assert CLIP_CROP_SCALE == (0.9, 1.0) and TrainConfig(train_dataset="x").crop_scale == [0.9, 1.0]
    for scale in (CLIP_CROP_SCALE, (0.08, 0.2)):
        transform = SampleTransform("clip", ImageSpec(32, "bilinear"), Tokenize(MobileCLIPTokenizer(), 16), 0,
                                    crop_scale=scale)
        i, j, h, w = sample_crop((48, 80), torch.Generator().manual_seed(seed_for_key("0:7", 0)), scale=scale)
        crop = TF.resized_crop(image, i, j, h, w, [32, 32], InterpolationMode.BILINEAR)
        assert torch.equal(transform(row, "7", 0)["pixel_values"], torch.from_numpy(np.array(crop)))  # uint8 HWC


def test_dataset_rebuilt_in_place_is_read_anew(tmp_path):
    # datasets keys its cache of a folder with a README `configs` card on the folder alone (see load_rows).
    folder = tmp_path / "ds"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                      "    path: data/train-*.parquet\n---\n")
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(buffer, "PNG")
    for version, caption in enumerate(("the first build", "the second build")):
        Dataset.from_dict({"image": [{"bytes": buffer.getvalue(), "path": None}], "caption": [caption]},
                          features=Features({"image": Image(), "caption": Value("string")})
                          ).to_parquet(str(folder / "data" / "train-00000.parquet"))
        os.utime(folder / "data" / "train-00000.parquet", (1e9 + version, 1e9 + version))
        rows = load_train_dataset(str(folder), "train", "clip", False, 0, 1, 0, 1, str(tmp_path / "cache"))
        assert rows[0]["caption"] == caption


def test_images_are_decoded_with_their_exif_orientation():
    # dataset_builder samples crop boxes on the datasets-decoded image, which EXIF-transposes: so must training.
    exif = PILImage.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    buffer = io.BytesIO()
    PILImage.new("RGB", (60, 40), (200, 10, 10)).save(buffer, "JPEG", exif=exif.tobytes())
    assert decode_image({"bytes": buffer.getvalue(), "path": None}).size == (40, 60)


def test_corrupt_sample_is_skipped_and_counted(assets):
    rows = load_train_dataset(assets["reinforced"], "train", "reinforced", False, 0, 10, 0, 1, assets["cache"])
    dataset = MapStyleDataset(rows, _transform())
    replaced = dataset[5]  # row 5 has undecodable image bytes: row 6 takes its place
    assert replaced["num_skipped"] == 1
    assert torch.equal(replaced["teacher_text_embeds"], torch.tensor(rows[6]["text_emb"][0]))
    batch = collate([dataset[4], replaced, dataset[6]])
    assert batch["num_skipped"].item() == 1 and batch["pixel_values"].shape == (3, 64, 64, 3)
    # Bad augmentation parameters or embedding shapes are caught the same way.
    broken = [
        {**rows[0], "aug_params": "[[0, 0, 9999, 9999], null]"},  # crop box outside the image
        {**rows[1], "image_emb": rows[1]["image_emb"][:2]},  # 2 stored augmentations instead of K = 3
        rows[2],
    ]
    assert MapStyleDataset(broken, _transform())[0]["num_skipped"] == 2


def test_streaming_split_across_ranks_endless_and_skips_corrupt(assets, monkeypatch):
    # datasets sleeps 5 s whenever a streamed pass over interleaved shards ends (apache/arrow#45214); harmless here.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    stored = pq.read_table(os.path.join(assets["reinforced"], "data"), columns=["text_emb"])["text_emb"].to_pylist()
    stored = {tuple(np.float32(emb[0][:3]).tolist()) for emb in stored}  # identifies a row
    keys, skipped = [], []
    for rank in range(2):
        rows = load_train_dataset(assets["reinforced"], "train", "reinforced", True, 0, 8, rank, 2, assets["cache"])
        assert rows.n_shards == 1  # 2 shards, 2 ranks: one each, disjoint
        stream = iter(StreamingDataset(rows, _transform()))
        samples = [next(stream) for _ in range(20)]  # more than the 16 rows of the rank: the stream goes on
        keys.append({tuple(s["teacher_text_embeds"][:3].tolist()) for s in samples})
        skipped.append(sum(s["num_skipped"] for s in samples))
    # The embeddings are the stored ones: pyarrow 26 corrupts some behind datasets' shuffle buffer (see data.py).
    assert keys[0] | keys[1] <= stored
    assert len(keys[0]) + len(keys[1]) == 31 and not keys[0] & keys[1]  # every good row, each on one rank
    assert min(skipped) == 0 and max(skipped) >= 1  # corrupt row 5 lives in one shard, i.e. on one rank


def test_missing_reinforced_columns_and_metadata_are_clear_errors(assets, tmp_path):
    missing = r"lacks the column\(s\) \['syn_captions', 'aug_params', 'image_emb', 'text_emb'\]"
    with pytest.raises(ValueError, match=missing):
        load_train_dataset(assets["plain"], "train", "reinforced", False, 0, 10, 0, 1, assets["cache"])
    with pytest.raises(FileNotFoundError, match="reinforcement.json not found"):
        Reinforcement.load(assets["plain"])
    meta = json.load(open(os.path.join(assets["reinforced"], "reinforcement.json")))
    os.makedirs(tmp_path / "bad")
    json.dump({**meta, "embedding_dim": 12}, open(tmp_path / "bad" / "reinforcement.json", "w"))
    with pytest.raises(ValueError, match="do not sum to embedding_dim 12"):
        Reinforcement.load(str(tmp_path / "bad"))


def test_tokenize_caches_each_caption_and_matches_the_tokenizer():
    tokenizer = MobileCLIPTokenizer()
    calls = []

    class Counting:
        def __call__(self, texts, **kwargs):
            calls.append(list(texts))
            return tokenizer(texts, **kwargs)

    expected = tokenizer(["a cat", "a dog", "a cat", "IMG_2041.jpg"], padding="max_length", max_length=9,
                         truncation=True, return_tensors="pt")["input_ids"]
    tokenize = Tokenize(Counting(), 9, cache_size=2)
    assert torch.equal(tokenize(["a cat", "a dog", "a cat"]), expected[:3])
    assert torch.equal(tokenize(["a dog", "a cat"]), expected[[1, 0]])
    assert calls == [["a cat", "a dog"]]  # the second call is served from the cache
    assert torch.equal(tokenize(["IMG_2041.jpg", "a cat"]), expected[[3, 0]])  # over cache_size: cleared, re-done
    assert calls[-1] == ["IMG_2041.jpg", "a cat"]
