"""Train MobileCLIP with multi-modal reinforced training, or the CLIP and online-distillation baselines.

MobileCLIP (Vasu et al., CVPR 2024) trains on a reinforced dataset (DataCompDR), whose stored augmentations,
synthetic captions and teacher embeddings make distillation free of teacher passes. Recipes (`recipe:`):

* `reinforced`: the paper's loss, `train/loss.py` `ReinforcedCLIPLoss` (teachers and scales from reinforcement.json);
* `clip`: plain CLIP on `image` + `caption` with a RandomResizedCrop;
* `online_distill`: the same distillation with the teachers run live (MobileCLIP/CLIP models from local folders).

Runs on one CPU or GPU, several GPUs (DDP), or several CPU processes (gloo), in fp32, bf16 or fp16:

    accelerate launch train/train.py --config train/configs/datacompdr12m_s0.yaml [key=value ...]
    # Two real processes on a CPU-only machine (`--cpu --num_processes 2` silently runs one):
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 train/train.py ...

Order of accelerate's `complete_cv_example`: config, Accelerator, trackers, seed, model, data, optimizer and
scheduler, prepare, resume, loop (accumulate, backward, step on sync), evaluate, log, save_state, save_pretrained.
"""

import argparse
import difflib
import functools
import itertools
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

# Run as a script, Python puts train/ first on sys.path, where this file would shadow the `train` package.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(sys.path[0])
# Captions are tokenised two at a time in forked DataLoader workers: the Rust thread pool would only warn there.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import safetensors.torch
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, get_available_trackers
from accelerate.utils import RNG_STATE_NAME, ProjectConfiguration, set_seed
from accelerate.utils import load as accelerate_load
from huggingface_hub.dataclasses import strict
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from dataset_builder.teachers import TeacherEnsemble, TransformersTeacher
from modeling_mobileclip import load_model_and_processor
from modeling_mobileclip.modelcard import eval_entries, model_card
from modeling_mobileclip.modeling_mobileclip import MAX_LOGIT_SCALE
from modeling_mobileclip.paths import is_hub_id
from train.data import (
    CLIP_CROP_SCALE,
    DEFAULT_SYN_CAPTIONS_REGEX,
    RECIPES,
    ImageSpec,
    Reinforcement,
    SampleTransform,
    StreamingDataset,
    Tokenize,
    build_train_dataloader,
    load_rows,
    load_train_dataset,
    synthetic_caption_sets,
)
from train.evaluate import TEMPLATES, context_length, load_eval_task, run_eval_tasks
from train.loss import ReinforcedCLIPLoss

# The learned temperature is clamped to MAX_LOGIT_SCALE (100) after every step (open_clip); the parameter is its log.
MAX_LOG_LOGIT_SCALE = math.log(MAX_LOGIT_SCALE)
TEACHER_KEYS = ("teacher_image_embeds", "teacher_text_embeds", "teacher_syn_text_embeds")
CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")  # accelerate's naming; other entries of checkpoints/ are ignored
TEMPORARY_PREFIX = ".tmp-"  # checkpoints being written or deleted: never resumed from, removed at the next start
# Scheduler and Progress, as JSON that this script reads itself: accelerate would pickle them as custom checkpoints and
# unpickle them with weights_only=False, running whatever code a checkpoint folder from elsewhere holds.
TRAIN_STATE = "train_state.json"
EMA_WEIGHTS = "ema_model.safetensors"  # the moving average of the weights (ema_decay), in each checkpoint


# An int is a valid float (PEP 484's numeric tower) and YAML reads `0` or `1` as one; `@strict` alone would refuse it.
Number = float | int


@strict
@dataclass
class TrainConfig:
    """Every key a YAML config may set. Defaults are the paper's DataCompDR-12M recipe
    (https://arxiv.org/abs/2311.17049, Appendix; apple/ml-mobileclip `training/configs/run_datacompdr12m.sh`).

    `@strict` (huggingface_hub, as transformers' configs) checks every value against its annotation, at construction
    and on assignment; `validate_values` then checks the values themselves, reporting every bad value at once.
    """

    # Model and data
    model: str = "mobileclip-s0"  # variant name (random init), or folder / Hub id (weights if present)
    recipe: Literal[RECIPES] = "reinforced"
    train_dataset: str = ""  # local dataset folder (map-style) or Hub dataset id (streamed)
    train_split: str = "train"
    streaming: bool | None = None  # None: stream Hub ids, read local folders map-style
    shuffle_buffer_size: int = 10_000  # streaming only
    num_workers: int = 4  # DataLoader workers per process (decoding and augmentation happen there)
    dataset_cache_dir: str | None = None  # datasets' Arrow cache for local folders (default: HF_DATASETS_CACHE)
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bicubic"  # student resize of the replayed crop
    # Decode a JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling) when its crop box is at least that many
    # times the input size in both dims: a faster loader, but the pixels then differ slightly from those the stored
    # teacher embeddings were computed on (data.py `SourceImage`). Off: the stored augmentations replayed exactly.
    fast_jpeg_decode: bool = False
    # Resize the replayed crop with PyTorch's antialiased uint8 kernels instead of PIL's: faster, a few pixels then a
    # level or a few off the exact replay's (data.py `resized_crop_uint8` has the figures). Bilinear or bicubic only.
    fast_resize: bool = False
    crop_scale: list[Number] = field(default_factory=lambda: list(CLIP_CROP_SCALE))  # clip recipe: RRC area range
    teacher_models: list[str] = field(default_factory=list)  # online_distill: teacher folders (same input size)
    teacher_logit_scale: Number | list[Number] | None = None  # None: reinforcement.json's, or 100 for online_distill
    loss_weights: list[Number] = field(default_factory=lambda: [0.0, 1.0])  # (w_clip, w_distill), paper's (1-λ, λ)
    # Apple's v2 data options (open_clip_v2.patch `--dataset-reinforcement-*`); the defaults are the v1 loader's.
    # Synthetic-caption sets to sample from, by column name (`re.match`): `syn_captions` (embeddings text_emb[1:]) and
    # `syn_captions_<name>` (embeddings syn_text_emb_<name>), Apple's syn.json keys `syn_text`, `syn_text_<name>`;
    # one matched set is drawn per sample, then one caption of it. Apple's default `^syn_text.*$` is `^syn_captions`.
    syn_captions_regex: str = DEFAULT_SYN_CAPTIONS_REGEX
    mix_synthetic: bool = False  # the contrastive caption is the synthetic one with mix_synthetic_ratio, else the
    mix_synthetic_ratio: Number = 0.0  # real one, and there is no separate synthetic-caption batch (0: all real)
    sample_sequential: bool = False  # epoch e uses stored augmentation e mod K and synthetic caption e mod N
    filter_image_size: int | None = None  # skip (and count) samples whose stored image has a shorter side below this
    online_distill_syn_captions: bool = False  # online_distill: the teachers also embed a synthetic caption per sample
    # Optimisation (OpenCLIP AdamW, warmup then cosine)
    global_batch_size: int = 8192  # = per-device batch x processes x gradient_accumulation_steps
    gradient_accumulation_steps: int = 1  # note: each micro-batch only sees its own negatives
    train_steps: int = 30_000  # optimizer steps; also the length of the cosine schedule
    lr: Number = 1e-3
    beta1: Number = 0.9
    beta2: Number = 0.95
    eps: Number | None = None  # None: 1e-6 for ViT image towers, else 1e-8 (open_clip)
    weight_decay: Number = 0.2  # not applied to biases, norms, logit_scale (every parameter with ndim < 2)
    lr_scheduler: Literal["cosine", "constant"] = "cosine"  # both after the linear warmup
    warmup_steps: int = 1000
    max_grad_norm: Number = 1.0  # 0 disables clipping
    # An exponential moving average of the weights (timm's ModelEmaV3), updated after every optimizer step from the
    # first (which it copies), is what is evaluated and saved; 0: off, the raw weights. With ema_warmup_power p the
    # decay after step t is min(ema_decay, 1 - t ** -p) (timm's warm-up): an average that depends on the step alone,
    # so that with a constant learning rate accuracy after s samples means the same for every budget.
    ema_decay: Number = 0.0
    ema_warmup_power: Number | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"  # fp16 needs a GPU: on CPU accelerate runs fp32
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    seed: int = 0
    # Checkpoints and logging
    output_dir: str = "outputs/mobileclip"
    save_every: int = 1000  # accelerator.save_state every N steps (0: only at the end)
    save_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None  # "latest" (none yet: start fresh) or a checkpoint folder
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # accelerate trackers, or ["none"]
    run_name: str = "mobileclip"
    log_every: int = 10
    push_to_hub: bool = False
    hub_model_id: str | None = None
    license: str | None = None  # Hub licence id for the model card (e.g. apache-2.0, apple-amlr); none: omitted
    # Evaluation (eval_every steps and at the end)
    eval_every: int = 0  # 0: only at the end, if an eval dataset is given
    eval_zeroshot_dataset: str | None = None  # labelled images: `image`, ClassLabel `label`
    eval_zeroshot_split: str = "validation"
    eval_class_names: list[str] | None = None  # default: the ClassLabel's names
    eval_templates: str | list[str] = "openai"  # a name in evaluate.TEMPLATES or a list of "... {} ..." prompts
    eval_retrieval_dataset: str | None = None  # image-caption pairs: `image`, `caption` (string or list)
    eval_retrieval_split: str = "test"
    eval_batch_size: int = 256
    eval_max_samples: int | None = None

    def validate_values(self) -> None:
        """Run by `@strict` after every construction, on well-typed values."""
        if errors := _value_errors(self):
            raise ValueError("Invalid config:\n  " + "\n  ".join(errors))


_POSITIVE = ("global_batch_size", "gradient_accumulation_steps", "train_steps", "log_every", "eval_batch_size",
             "shuffle_buffer_size", "save_total_limit", "eval_max_samples", "filter_image_size")
_NON_NEGATIVE = ("warmup_steps", "max_grad_norm", "save_every", "eval_every", "num_workers")


def _value_errors(cfg: TrainConfig) -> list[str]:
    """Everything wrong with the values of a well-typed config."""
    value = functools.partial(getattr, cfg)
    # NaN passes every bound below (all its comparisons are false) and inf trains to NaN: no float key may be either.
    non_finite = sorted({f.name for f in fields(cfg) for x in _as_list(value(f.name))
                         if isinstance(x, float) and not math.isfinite(x)})
    errors = [f"{k} must be finite, got {value(k)}" for k in non_finite]
    checked = lambda k: k not in non_finite and value(k) is not None  # noqa: E731 (one error per key)
    errors += [f"{k} must be > 0, got {value(k)}" for k in _POSITIVE if checked(k) and value(k) <= 0]
    errors += [f"{k} must be >= 0, got {value(k)}" for k in _NON_NEGATIVE if checked(k) and value(k) < 0]
    errors += [f"{k} must be in [0, 1), got {value(k)}" for k in ("beta1", "beta2", "ema_decay")
               if checked(k) and not 0 <= value(k) < 1]
    # AdamW moves each weight by about lr per step whatever the gradient's scale: above 1 that is more than a weight's
    # own size every step, which only diverges (MobileCLIP trains at 1e-3).
    if checked("lr") and not 0 < cfg.lr <= 1:
        errors.append(f"lr must be in (0, 1], got {cfg.lr}")
    # Decoupled decay scales the decayed weights by 1 - lr * weight_decay each step; CLIP recipes use 0.1-0.5, and
    # above 1 it drives the weights to 0 instead of regularising them.
    if checked("weight_decay") and not 0 <= cfg.weight_decay <= 1:
        errors.append(f"weight_decay must be in [0, 1], got {cfg.weight_decay}")
    # eps keeps Adam's division by the gradient's RMS finite (> 0); from 1 up it swamps that RMS entirely.
    if checked("eps") and not 0 < cfg.eps < 1:
        errors.append(f"eps must be in (0, 1) or null, got {cfg.eps}")
    if not cfg.train_dataset:
        errors.append("train_dataset is required (a local folder or a Hub dataset id)")
    if len(cfg.crop_scale) != 2 or checked("crop_scale") and not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        errors.append(f"crop_scale must be [min, max] with 0 < min <= max <= 1, got {cfg.crop_scale}")
    if len(cfg.loss_weights) != 2:
        errors.append(f"loss_weights must be [w_clip, w_distill], got {cfg.loss_weights}")
    # A negative weight maximises its loss; both 0 leave nothing to learn (the clip recipe ignores them).
    elif checked("loss_weights") and (min(cfg.loss_weights) < 0 or
                                      (cfg.recipe != "clip" and not sum(cfg.loss_weights) > 0)):
        errors.append(f"loss_weights must be >= 0 and not both 0, got {cfg.loss_weights}")
    # A negative teacher scale turns the teachers' most similar pairs into the least likely targets; 0 makes the
    # targets uniform, whatever the teachers say.
    if checked("teacher_logit_scale") and any(s <= 0 for s in _as_list(cfg.teacher_logit_scale)):
        errors.append(f"teacher_logit_scale must be > 0 (one, or one per teacher), got {cfg.teacher_logit_scale}")
    if checked("ema_warmup_power") and not cfg.ema_warmup_power > 0:
        errors.append(f"ema_warmup_power must be > 0 or null, got {cfg.ema_warmup_power}")
    elif cfg.ema_warmup_power is not None and not cfg.ema_decay:
        errors.append("ema_warmup_power is set, but ema_decay is 0 (no moving average)")
    if cfg.recipe == "online_distill" and not cfg.teacher_models:
        errors.append("recipe online_distill needs teacher_models (folders of MobileCLIP/CLIP models)")
    errors += _synthetic_caption_errors(cfg, checked)
    if isinstance(cfg.eval_templates, str) and cfg.eval_templates not in TEMPLATES:
        errors.append(f"eval_templates must be one of {sorted(TEMPLATES)} or a list, got {cfg.eval_templates!r}")
    trackers = [t for t in cfg.report_to if t != "none"]
    if unknown := [t for t in trackers if t not in LOGGER_TYPE_TO_CLASS]:
        errors.append(f"report_to has unknown trackers {unknown}; known: {sorted(LOGGER_TYPE_TO_CLASS)} or none")
    # accelerate silently drops a known tracker whose package is missing.
    elif missing := [t for t in trackers if t not in map(str, get_available_trackers())]:
        errors.append(f"report_to: {missing} requested but not installed (pip install {' '.join(missing)})")
    return errors


def _synthetic_caption_errors(cfg: TrainConfig, checked) -> list[str]:
    """The v2 synthetic-caption options: valid values, and only where the recipe reads synthetic captions."""
    errors = []
    try:
        re.compile(cfg.syn_captions_regex)
    except re.error as error:
        errors.append(f"syn_captions_regex is not a valid regular expression: {cfg.syn_captions_regex!r} ({error})")
    if checked("mix_synthetic_ratio") and not 0 <= cfg.mix_synthetic_ratio <= 1:
        errors.append(f"mix_synthetic_ratio must be in [0, 1], got {cfg.mix_synthetic_ratio}")
    elif cfg.mix_synthetic_ratio and not cfg.mix_synthetic:  # a ratio alone would silently change nothing
        errors.append(f"mix_synthetic_ratio {cfg.mix_synthetic_ratio} needs mix_synthetic: true")
    if cfg.online_distill_syn_captions and cfg.recipe != "online_distill":
        errors.append(f"online_distill_syn_captions is for recipe online_distill (recipe {cfg.recipe!r}; the "
                      "reinforced recipe always reads synthetic captions)")
    reads_synthetic = cfg.recipe == "reinforced" or (cfg.recipe == "online_distill" and cfg.online_distill_syn_captions)
    used = [k for k, default in (("syn_captions_regex", DEFAULT_SYN_CAPTIONS_REGEX), ("mix_synthetic", False),
                                 ("sample_sequential", False)) if getattr(cfg, k) != default]
    if used and not reads_synthetic:
        where = ("recipe online_distill without online_distill_syn_captions: true" if cfg.recipe == "online_distill"
                 else f"recipe {cfg.recipe!r}")
        errors.append(f"{', '.join(used)} set, but {where} reads no synthetic captions")
    return errors


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


class _YAML12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans and floats (those of JSON): `no` or `off` stay strings (YAML 1.1
    reads accelerate's `mixed_precision: no` as false), and `1e-3` is a float (YAML 1.1 wants `1.0e-3`)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:bool",
                                                                           "tag:yaml.org,2002:float")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_YAML12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_YAML12Loader.add_implicit_resolver(  # after the int resolver, which takes plain digits
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_config(path: str, overrides: list[str] = ()) -> TrainConfig:
    """Reads a YAML config and applies `key=value` overrides (values parsed as YAML); unknown keys are errors."""
    with open(path) as f:
        values = yaml.load(f, _YAML12Loader) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config must be a mapping of keys to values")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} must look like key=value")
        values[key.strip()] = yaml.load(value, _YAML12Loader)
    known = [f.name for f in fields(TrainConfig)]
    for key in values:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {hint[0]!r}?" if hint else "the keys are the fields of TrainConfig in train/train.py"
            raise ValueError(f"Unknown config key {key!r}; {hint}")
    return TrainConfig(**values)


class JsonlTracker(GeneralTracker):
    """Appends every logged dict as one JSON line to `path` (machine-readable metrics, always on).

    `__init__` is deliberately not `@on_main_process`: built before the Accelerator, that decorator would create the
    process state too early and freeze it as non-distributed.
    """

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    @property
    def tracker(self):
        return self.path

    def _write(self, record: dict) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as f:  # opened per record: a killed run keeps every line it logged
            f.write(json.dumps(record) + "\n")

    def store_init_configuration(self, values: dict) -> None:
        self._write({"config": values})

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self._write({"step": step, **values})


@dataclass
class Progress:
    """Training position, checkpointed with the model: optimizer steps, epoch, micro-batches into the epoch (all
    micro-batches ever, when streaming), and corrupt samples skipped over all processes."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def build_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with open_clip's groups: no weight decay for biases, norms and logit_scale (all of ndim < 2); layer
    scales, shaped (C, 1, 1), are decayed (as open_clip's `ndim < 2` rule does)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "bias" in name or "logit_scale" in name else decay).append(param)
    is_vit = model.config.vision_config.architecture.startswith("vit_")
    eps = cfg.eps if cfg.eps is not None else (1e-6 if is_vit else 1e-8)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=eps)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """open_clip's `cosine_lr`: linear warmup to `lr` in `warmup_steps`, then cosine to 0 at `train_steps`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_scheduler == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.train_steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def load_teachers(cfg: TrainConfig, device) -> tuple[TeacherEnsemble, ImageSpec, Tokenize]:
    """Online distillation: the frozen teachers, as dataset_builder's (which embeds and concatenates as the stored
    DataCompDR embeddings are), their shared input spec, and the tokenizer of their captions (the first teacher's,
    run in the DataLoader workers)."""
    teachers = []
    for path in cfg.teacher_models:
        model, processor = load_model_and_processor(path)
        tokenize = Tokenize(processor.tokenizer, context_length(model.config))
        teachers.append(TransformersTeacher.from_processor(model.to(device).requires_grad_(False), tokenize,
                                                           processor.image_processor, name=path))
    specs = {ImageSpec(t.image_size, t.interpolation, t.mean, t.std) for t in teachers}
    if len(specs) != 1:
        raise ValueError(f"teacher_models must share image size and normalisation, got {specs}")
    return TeacherEnsemble(teachers), specs.pop(), teachers[0].tokenize


def build_train_data(cfg, accelerator, processor, batch_size, teacher_spec=None, teacher_tokenize=None):
    """The training DataLoader and the dataset's reinforcement metadata (None unless the recipe is reinforced)."""
    streaming = cfg.streaming if cfg.streaming is not None else not os.path.isdir(cfg.train_dataset)
    reinforcement = Reinforcement.load(cfg.train_dataset) if cfg.recipe == "reinforced" else None
    syn_sets = ()
    if cfg.recipe == "reinforced" or cfg.online_distill_syn_captions:
        # The column names only: a streamed view reads no rows (and no Arrow cache is written).
        columns = load_rows(cfg.train_dataset, cfg.train_split, streaming=True).column_names
        syn_sets = synthetic_caption_sets(columns, cfg.syn_captions_regex, cfg.train_dataset)
    with accelerator.main_process_first():  # the first process writes datasets' Arrow cache, the others reuse it
        dataset = load_train_dataset(
            cfg.train_dataset, cfg.train_split, cfg.recipe, streaming, cfg.seed, cfg.shuffle_buffer_size,
            accelerator.process_index, accelerator.num_processes, cfg.dataset_cache_dir, syn_sets,
        )
    student = ImageSpec.from_image_processor(processor.image_processor, cfg.interpolation)
    tokenize = Tokenize(processor.tokenizer, processor.tokenizer.model_max_length)
    transform = SampleTransform(
        cfg.recipe, student, tokenize, cfg.seed, reinforcement, teacher_spec, teacher_tokenize, cfg.crop_scale,
        syn_sets=syn_sets, mix_synthetic_ratio=cfg.mix_synthetic_ratio if cfg.mix_synthetic else None,
        sample_sequential=cfg.sample_sequential, min_image_size=cfg.filter_image_size,
        fast_jpeg_decode=cfg.fast_jpeg_decode, fast_resize=cfg.fast_resize,
    )
    return build_train_dataloader(dataset, transform, batch_size, cfg.num_workers, streaming), reinforcement


@torch.no_grad()
def teacher_embeddings(teachers: TeacherEnsemble, spec: ImageSpec, batch: dict, accelerator) -> dict[str, torch.Tensor]:
    """Online distillation targets (the layout of stored DataCompDR embeddings) of the images (the loader's uint8
    `teacher_pixel_values`, converted with the teachers' `spec`), the real captions and, if the batch has them, the
    synthetic captions (one text pass over both, as open_clip_v2.patch runs its `dist_model`)."""
    input_ids = batch["teacher_input_ids"]
    if "teacher_syn_input_ids" in batch:
        input_ids = torch.cat([input_ids, batch["teacher_syn_input_ids"]])
    pixel_values = spec.normalize_batch(batch["teacher_pixel_values"])
    with accelerator.autocast():
        image = teachers.embed_pixel_values(pixel_values)
        text = teachers.embed_input_ids(input_ids)
    n = batch["teacher_input_ids"].shape[0]
    targets = {"teacher_image_embeds": image, "teacher_text_embeds": text[:n]}
    if len(text) > n:
        targets["teacher_syn_text_embeds"] = text[n:]
    return targets


def compute_loss(model, batch: dict, loss_fn, student: ImageSpec, teachers: TeacherEnsemble | None,
                 teacher_spec: ImageSpec | None, accelerator) -> dict[str, torch.Tensor]:
    """Student forward pass and loss of one micro-batch, its uint8 pixels converted on their device with the
    student's (and the teachers') image spec (`teachers`: online distillation's, run on the batch)."""
    n = batch["pixel_values"].shape[0]
    input_ids = batch["input_ids"]
    if "syn_input_ids" in batch:  # one text-tower pass over [real; synthetic] captions, as DRClipLoss does
        input_ids = torch.cat([input_ids, batch["syn_input_ids"]])
    # Through the prepared model's forward, so that DDP sees the pass; features in fp32 for the loss.
    outputs = model(input_ids=input_ids, pixel_values=student.normalize_batch(batch["pixel_values"]))
    image, text = outputs.image_embeds.float(), outputs.text_embeds.float()
    targets = teacher_embeddings(teachers, teacher_spec, batch, accelerator) if teachers is not None else {}
    targets.update({key: batch[key] for key in TEACHER_KEYS if key in batch})
    logit_scale = accelerator.unwrap_model(model).logit_scale.exp()
    return loss_fn(image, text[:n], logit_scale, syn_text_features=text[n:] if len(text) > n else None, **targets)


def checkpoint_folders(checkpoints: str) -> dict[int, str]:
    """The `checkpoint_<i>` folders of `checkpoints` by increasing index; any other entry (`.DS_Store`, temporary
    folders) is not one."""
    found = {}
    for name in os.listdir(checkpoints) if os.path.isdir(checkpoints) else ():
        path = os.path.join(checkpoints, name)
        if (match := CHECKPOINT_NAME.fullmatch(name)) and os.path.isdir(path):
            found[int(match[1])] = path
    return dict(sorted(found.items()))


def is_complete(checkpoint: str) -> bool:
    """Written by save_checkpoint to the end (TRAIN_STATE is its last file), not cut short by an older version's
    in-place save."""
    return os.path.isfile(os.path.join(checkpoint, TRAIN_STATE))


def remove_temporary_folders(checkpoints: str, accelerator) -> None:
    """Main process, at start: the leftovers of a run killed while writing or deleting a checkpoint."""
    for name in os.listdir(checkpoints) if os.path.isdir(checkpoints) else ():
        if name.startswith(TEMPORARY_PREFIX) and os.path.isdir(path := os.path.join(checkpoints, name)):
            accelerator.print(f"Removing {path}, left by a run interrupted while saving")
            shutil.rmtree(path)


def _fsync(path: str) -> None:
    try:  # directories cannot be opened or synced everywhere (Windows, some network file systems)
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def scheduler_state(scheduler) -> dict:
    """The LambdaLR's state without its `lr_lambdas` (plain functions: saved as None by torch anyway)."""
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def save_checkpoint(accelerator, checkpoints: str, index: int, scheduler, progress, total_limit: int | None,
                    ema=None) -> str:
    """accelerator.save_state into a temporary folder, renamed to `checkpoint_<index>` once complete: a run killed or
    out of disk mid-save leaves a temporary folder, never a `checkpoint_<i>` that resume would pick and fail on. The
    oldest checkpoints are rotated out only then, so that the previous good one outlives a failed save."""
    final = os.path.join(checkpoints, f"checkpoint_{index}")
    temporary = os.path.join(checkpoints, f"{TEMPORARY_PREFIX}checkpoint_{index}")
    accelerator.save_state(temporary)  # every process writes its part (model and optimizer: main; RNG: each)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            safetensors.torch.save_model(ema.module, os.path.join(temporary, EMA_WEIGHTS))
        with open(os.path.join(temporary, TRAIN_STATE), "w") as f:
            json.dump({"progress": progress.state_dict(), "scheduler": scheduler_state(scheduler)}, f, indent=1)
        for name in os.listdir(temporary):  # on disk before the rename, so that a power cut cannot reorder them
            _fsync(os.path.join(temporary, name))
        if os.path.exists(final):
            raise FileExistsError(f"{final} already exists: another run is writing to {checkpoints}?")
        os.replace(temporary, final)
        _fsync(checkpoints)
        complete = [path for path in checkpoint_folders(checkpoints).values() if is_complete(path)]
        for path in complete[: max(0, len(complete) - total_limit)] if total_limit else ():
            # Renamed first: a kill mid-delete leaves a temporary folder, not a half-deleted checkpoint_<i>.
            doomed = os.path.join(checkpoints, TEMPORARY_PREFIX + os.path.basename(path))
            os.replace(path, doomed)
            shutil.rmtree(doomed)
    accelerator.wait_for_everyone()
    return final


def _expect_like(value, expected, where: str) -> None:
    """`value` has the structure and types of `expected` (JSON data: same keys, list lengths, bool/int/float)."""
    if isinstance(expected, dict):
        if not isinstance(value, dict) or set(value) != set(expected):
            raise ValueError(f"{where} must have the keys {sorted(expected)}, got {value!r}")
        for key in expected:
            _expect_like(value[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        if not isinstance(value, list) or len(value) != len(expected):
            raise ValueError(f"{where} must be a list of {len(expected)}, got {value!r}")
        for i, (item, want) in enumerate(zip(value, expected)):
            _expect_like(item, want, f"{where}[{i}]")
    elif type(value) is not type(expected) and not (type(expected) is float and type(value) is int):
        raise ValueError(f"{where} must be {type(expected).__name__}, got {value!r}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value!r}")


def read_train_state(checkpoint: str, scheduler) -> dict:
    """The checkpoint's TRAIN_STATE, checked against the structure of this run's scheduler and Progress."""
    path = os.path.join(checkpoint, TRAIN_STATE)
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON: {error}") from error
    _expect_like(state, {"progress": Progress().state_dict(), "scheduler": scheduler_state(scheduler)}, path)
    if min(state["progress"].values()) < 0:
        raise ValueError(f"{path}: progress counts must be >= 0, got {state['progress']}")
    return state


def check_loadable(accelerator, checkpoint: str) -> None:
    """Refuses, before accelerator.load_state reads anything, the files it would load unsafely or silently skip."""
    # load_state unpickles custom_checkpoint_<i>.pkl with weights_only=False, i.e. runs any code they hold. This
    # script registers no objects for checkpointing, so such files come from an older version or from elsewhere.
    if custom := sorted(f for f in os.listdir(checkpoint) if re.fullmatch(r"custom_checkpoint_\d+\.pkl", f)):
        raise ValueError(f"Checkpoint {checkpoint} holds {custom}: pickles that loading would execute, which this "
                         f"script never writes (it keeps that state in {TRAIN_STATE}). Not loaded; delete them only "
                         "if you trust where the checkpoint came from.")
    # load_state reads RNG states with weights_only=True, but resumes with the current ones when that refuses a file.
    # Read here with the same loader, every rank's (so that all processes decide alike), to make that an error.
    for rank in range(accelerator.num_processes):
        path = os.path.join(checkpoint, f"{RNG_STATE_NAME}_{rank}.pkl")
        if os.path.exists(path):
            try:
                accelerate_load(path)
            except Exception as error:
                raise ValueError(f"{path} is not a plain random-state file and was not loaded: {error}") from error


def resume(accelerator, cfg: TrainConfig, checkpoints: str, scheduler, progress: Progress, ema=None) -> None:
    """Restores model, optimizer, RNG states (accelerate), scheduler and `Progress` (TRAIN_STATE) and the moving
    average (EMA_WEIGHTS) from `cfg.resume_from_checkpoint`: a checkpoint folder, or "latest", the newest complete one
    in `checkpoints`."""
    path = cfg.resume_from_checkpoint
    if path == "latest":
        folders = list(checkpoint_folders(checkpoints).values())
        complete = [folder for folder in folders if is_complete(folder)]
        for folder in folders[folders.index(complete[-1]) + 1 if complete else 0:]:
            accelerator.print(f"Skipping {folder}: incomplete (no {TRAIN_STATE}; interrupted while saving?)")
        if not complete:
            accelerator.print(f"No complete checkpoint in {checkpoints} yet: starting from scratch")
            return
        path = complete[-1]
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"resume_from_checkpoint: {path} is not a checkpoint folder")
    elif not is_complete(path):
        raise ValueError(f"resume_from_checkpoint: {path} has no {TRAIN_STATE}, so it is incomplete (interrupted "
                         "while saving) or from a version of train.py that pickled it")
    state = read_train_state(path, scheduler)
    check_loadable(accelerator, path)
    if ema is not None and not os.path.isfile(os.path.join(path, EMA_WEIGHTS)):
        raise ValueError(f"Checkpoint {path} has no {EMA_WEIGHTS}: it was saved by a run without ema_decay, so there "
                         "is no moving average to resume (train on without ema_decay, or start afresh)")
    try:  # model: safetensors, or weights_only torch.load; optimizer, scaler: weights_only torch.load
        accelerator.load_state(path)
    except pickle.UnpicklingError as error:
        raise ValueError(f"Checkpoint {path} holds a file that is not plain tensors and was not loaded (unpickling it "
                         f"could run code): {error}") from error
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    progress.load_state_dict(state["progress"])
    if ema is not None:
        # Read on the CPU and copied into the average's tensors on their device (accelerate's "cpu:0" is no device
        # name safetensors accepts).
        safetensors.torch.load_model(ema.module, os.path.join(path, EMA_WEIGHTS), device="cpu")
    accelerator.print(f"Resumed from {path} (step {progress.step})")


def training_function(cfg: TrainConfig) -> None:
    """Trains, evaluates and saves as configured (see the module docstring for the order of operations)."""
    trackers = [t for t in cfg.report_to if t != "none"] + [JsonlTracker(os.path.join(cfg.output_dir, "metrics.jsonl"))]
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=trackers,
        # Checkpoints are named and rotated by save_checkpoint: accelerate's automatic naming writes in place and
        # deletes the oldest checkpoint before the new one is complete.
        project_config=ProjectConfiguration(project_dir=cfg.output_dir,
                                            logging_dir=os.path.join(cfg.output_dir, "logs")),
        # Per-epoch shuffles from seed + epoch, so that a resumed run replays the same order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        dynamo_backend="inductor" if cfg.torch_compile else "no",
    )
    world, accumulation = accelerator.num_processes, cfg.gradient_accumulation_steps
    if cfg.global_batch_size % (world * accumulation):
        raise ValueError(f"global_batch_size {cfg.global_batch_size} is not divisible by {world} processes x "
                         f"{accumulation} accumulation steps")
    batch_size = cfg.global_batch_size // (world * accumulation)
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        accelerator.print("Warning: fp16 is a no-op on CPU (accelerate trains in fp32); use bf16")
    # TensorBoard's hparams take scalars and strings only.
    hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in asdict(cfg).items()}
    hparams.update(world_size=world, per_device_batch_size=batch_size, distributed=str(accelerator.distributed_type))
    accelerator.init_trackers(cfg.run_name, config=hparams)
    set_seed(cfg.seed)  # before building the model, so that the seed also fixes its initial weights

    model, processor = load_model_and_processor(cfg.model, random_init=True)  # a config or variant: from scratch
    online = cfg.recipe == "online_distill"
    teachers, teacher_spec, teacher_tokenize = load_teachers(cfg, accelerator.device) if online else (None,) * 3
    train_dl, reinforcement = build_train_data(cfg, accelerator, processor, batch_size, teacher_spec, teacher_tokenize)
    student_spec = train_dl.dataset.transform.student  # the loader's pixels are this spec's, still uint8
    with accelerator.main_process_first():
        evals = {
            task: load_eval_task(task, source, split, processor.image_processor, cfg.eval_class_names,
                                 cfg.eval_batch_size, cfg.num_workers, cfg.eval_max_samples, cfg.dataset_cache_dir)
            for task, source, split in (("zeroshot", cfg.eval_zeroshot_dataset, cfg.eval_zeroshot_split),
                                        ("retrieval", cfg.eval_retrieval_dataset, cfg.eval_retrieval_split))
            if source
        }
    if cfg.recipe == "clip":
        loss_fn = ReinforcedCLIPLoss()
    else:
        dims = reinforcement.teacher_dims if reinforcement else [t.dim for t in teachers.teachers]
        default_scale = reinforcement.teacher_logit_scales if reinforcement else 100.0
        scale = cfg.teacher_logit_scale if cfg.teacher_logit_scale is not None else default_scale
        if reinforcement and cfg.teacher_logit_scale is None and not all(math.isfinite(x) and x > 0 for x in scale):
            # The same bound as the config key's (see _value_errors), for the dataset's own scales.
            raise ValueError(f"{cfg.train_dataset}: reinforcement.json's teacher logit scales must be finite and > 0, "
                             f"got {scale}; set teacher_logit_scale to override them")
        loss_fn = ReinforcedCLIPLoss(dims, scale, loss_weights=tuple(cfg.loss_weights))

    if cfg.gradient_checkpointing:  # non-reentrant: the reentrant variant breaks DDP's gradient hooks
        model.activation_checkpointing_enable({"use_reentrant": False})
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            accelerator.print("Warning: the recomputed forward updates BatchNorm running statistics a second time")
    optimizer = build_optimizer(model, cfg)
    # Not prepared: accelerate would step it once per process per optimizer step. Stepped here on each optimizer
    # step instead, and checkpointed in TRAIN_STATE by save_checkpoint.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))

    # A streamed loader is not prepared: data.py already split it by rank, and preparing it as well would shard it
    # twice and silently drop half of the data.
    if isinstance(train_dl.dataset, StreamingDataset):
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, train_dl = accelerator.prepare(model, optimizer, train_dl)
        if len(train_dl) == 0:
            raise ValueError(f"{cfg.train_dataset} has fewer rows than one global batch ({cfg.global_batch_size})")
    evals = {task: {**e, "loader": accelerator.prepare(e["loader"])} for task, e in evals.items()}
    # A copy of the plain module (not of torch.compile's wrapper); updated from the trained one's state in order.
    ema = ModelEmaV3(accelerator.unwrap_model(model, keep_torch_compile=False), decay=cfg.ema_decay,
                     use_warmup=cfg.ema_warmup_power is not None,
                     warmup_power=cfg.ema_warmup_power or 1.0) if cfg.ema_decay else None
    progress, checkpoints = Progress(), os.path.join(cfg.output_dir, "checkpoints")
    if accelerator.is_main_process:
        remove_temporary_folders(checkpoints, accelerator)
    accelerator.wait_for_everyone()
    if cfg.resume_from_checkpoint:
        resume(accelerator, cfg, checkpoints, scheduler, progress, ema)
    # After every existing name, complete or not, so that no save collides with a folder (load_state never advances a
    # counter either).
    indices = itertools.count(max(checkpoint_folders(checkpoints), default=-1) + 1)
    save = lambda: save_checkpoint(accelerator, checkpoints, next(indices), scheduler, progress,  # noqa: E731
                                   cfg.save_total_limit, ema)

    step_loss = functools.partial(compute_loss, loss_fn=loss_fn, student=student_spec, teachers=teachers,
                                  teacher_spec=teacher_spec, accelerator=accelerator)
    evaluate = functools.partial(run_eval_tasks, tokenizer=processor.tokenizer, tasks=evals,
                                 templates=cfg.eval_templates, accelerator=accelerator) if evals else None
    metrics = train_loop(cfg, accelerator, model, optimizer, scheduler, train_dl, step_loss, evaluate, progress, save,
                         ema)
    accelerator.wait_for_everyone()
    unwrapped = ema.module if ema is not None else accelerator.unwrap_model(model)
    unwrapped.save_pretrained(cfg.output_dir, is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save)
    if accelerator.is_main_process:
        processor.save_pretrained(cfg.output_dir)
        repo = cfg.hub_model_id or os.path.basename(os.path.abspath(cfg.output_dir))
        card = training_model_card(cfg, metrics, repo if cfg.push_to_hub else cfg.output_dir)
        card.save(os.path.join(cfg.output_dir, "README.md"))
        if cfg.push_to_hub:
            unwrapped.push_to_hub(repo)
            processor.push_to_hub(repo)
            card.push_to_hub(repo)
    accelerator.end_training()


RECIPE_SUMMARIES = {
    "reinforced": "multi-modal reinforced training: contrastive loss plus distillation from the teacher embeddings "
                  "stored in the dataset",
    "clip": "plain CLIP contrastive training",
    "online_distill": "distillation from teachers run during training",
}


def training_model_card(cfg: TrainConfig, metrics: dict, repo_or_path: str):
    """The saved model's card: the recipe, data, schedule and teachers, and the final evaluation as model-index."""
    samples = cfg.train_steps * cfg.global_batch_size
    teachers = {"reinforced": f"the embeddings stored in `{cfg.train_dataset}` (its `reinforcement.json`)",
                "online_distill": ", ".join(f"`{t}`" for t in cfg.teacher_models), "clip": "none"}[cfg.recipe]
    how_made = (
        f"Trained with `train/train.py`, recipe `{cfg.recipe}` ({RECIPE_SUMMARIES[cfg.recipe]}), "
        f"from `{cfg.model}`.\n\n"
        f"- data: `{cfg.train_dataset}` (split `{cfg.train_split}`)\n"
        f"- {cfg.train_steps} steps x {cfg.global_batch_size} samples = {samples:,} samples seen\n"
        f"- AdamW lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, {cfg.lr_scheduler} schedule after "
        f"{cfg.warmup_steps} warm-up steps; mixed precision {cfg.mixed_precision}; seed {cfg.seed}\n"
        f"- loss weights (contrastive, distillation): {cfg.loss_weights}; teachers: {teachers}"
    )
    if cfg.ema_decay:
        warmup = f", warm-up power {cfg.ema_warmup_power:g}" if cfg.ema_warmup_power is not None else ""
        how_made += f"\n- weights: their exponential moving average (decay {cfg.ema_decay:g}{warmup})"

    datasets_used = [cfg.train_dataset] if is_hub_id(cfg.train_dataset) else []
    sources = (("zeroshot", cfg.eval_zeroshot_dataset, cfg.eval_zeroshot_split),
               ("retrieval", cfg.eval_retrieval_dataset, cfg.eval_retrieval_split))
    evaluations = [entry for task, source, split in sources if source
                   for entry in eval_entries({k: v for k, v in metrics.items() if k.startswith(f"eval/{task}/")},
                                             source, split)]
    return model_card(cfg.run_name, how_made, repo_or_path, cfg.license, datasets=datasets_used,
                      tags=[f"recipe-{cfg.recipe}"], evaluations=evaluations)


def non_finite_tensors(model) -> list[str]:
    """Names of the parameters and floating-point buffers holding NaN or inf."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    return [name for name, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]


def train_loop(cfg, accelerator, model, optimizer, scheduler, train_dl, step_loss, evaluate, progress, save,
               ema=None) -> dict:
    """Optimizer steps until `train_steps`, with logging, evaluation (of `ema`'s weights, if given) and checkpoints
    (`save`).
    Raises FloatingPointError, before saving anything more, once the loss or the weights are no longer finite.

    Returns:
        The last evaluation's metrics (`eval/<task>/<metric>`), empty without evaluation.
    """
    last_eval = {}
    unwrapped, streaming = accelerator.unwrap_model(model), isinstance(train_dl.dataset, StreamingDataset)
    evaluated = ema.module if ema is not None else unwrapped
    model.train()
    bar = tqdm(total=cfg.train_steps, initial=progress.step, disable=not accelerator.is_local_main_process)
    start, window_steps, parts = time.perf_counter(), 0, []
    while progress.step < cfg.train_steps:
        if not streaming:
            train_dl.set_epoch(progress.epoch)  # the sampler's permutation
            train_dl.dataset.set_epoch(progress.epoch)  # per-sample augmentation and caption choices
        # Resuming mid-epoch: skip the batches already trained on (map-style: by index, no data is read).
        skip = progress.batch_in_epoch
        for batch in accelerator.skip_first_batches(train_dl, skip) if skip else train_dl:
            if streaming:  # a prepared loader places batches itself
                batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            with accelerator.accumulate(model):
                losses = step_loss(model, batch)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batch_in_epoch += 1
            parts.append(torch.stack([losses[k].detach() for k in ("loss", "contrastive_loss", "distill_loss")]
                                     + [batch["num_skipped"].to(accelerator.device).float()]))
            if not accelerator.sync_gradients:
                continue
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            scheduler.step()
            with torch.no_grad():
                unwrapped.logit_scale.clamp_(0, MAX_LOG_LOGIT_SCALE)
            if ema is not None:
                ema.update(unwrapped, step=progress.step + 1)
            # Loss parts: mean over micro-batches and processes (= the global-batch loss); corrupt samples: sum.
            local = torch.stack(parts)
            stats = torch.cat([local[:, :3].mean(0) / accelerator.num_processes, local[:, 3:].sum(0)])
            stats = accelerator.reduce(stats)
            # Reduced, so that every process stops at the same step. Past a NaN, training only spreads it to every
            # weight: stop before it reaches a checkpoint or the saved model.
            if not torch.isfinite(stats[:3]).all():
                raise FloatingPointError(
                    f"Training diverged: the loss is not finite at step {progress.step + 1} (loss {stats[0]:.4g}, "
                    f"contrastive {stats[1]:.4g}, distill {stats[2]:.4g}). Stopped without saving; the last "
                    f"checkpoint in {os.path.join(cfg.output_dir, 'checkpoints')} is the last good state. Try a lower "
                    "lr or more warmup_steps, or check the data's teacher embeddings.")
            progress.step, progress.skipped = progress.step + 1, progress.skipped + int(stats[3].item())
            parts, window_steps = [], window_steps + 1
            bar.update(1)
            if progress.step % cfg.log_every == 0 or progress.step == cfg.train_steps:
                logs = {
                    "train/loss": stats[0].item(), "train/contrastive_loss": stats[1].item(),
                    "train/distill_loss": stats[2].item(), "train/lr": lr,
                    "train/logit_scale": unwrapped.logit_scale.exp().item(), "train/epoch": progress.epoch,
                    "train/samples_per_second": window_steps * cfg.global_batch_size / (time.perf_counter() - start),
                    "train/skipped_samples": progress.skipped,
                }
                accelerator.log(logs, step=progress.step)
                bar.set_postfix({k.split("/")[1]: f"{v:.4g}" for k, v in logs.items() if k != "train/epoch"})
                start, window_steps = time.perf_counter(), 0
            last = progress.step == cfg.train_steps
            if evaluate and (last or (cfg.eval_every and progress.step % cfg.eval_every == 0)):
                last_eval = {f"eval/{k}": v for k, v in evaluate(evaluated).items()}
                accelerator.log(last_eval, step=progress.step)
            if last or (cfg.save_every and progress.step % cfg.save_every == 0):
                # A finite loss does not rule out an update that overflowed (it is computed before the step).
                if bad := non_finite_tensors(unwrapped):
                    names = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
                    raise FloatingPointError(f"Training diverged: after step {progress.step}, {len(bad)} tensors are "
                                             f"not finite ({names}). Stopped without saving; the newest checkpoint is "
                                             "the last good state. Try a lower lr or more warmup_steps.")
                save()
            if last:
                break
        else:  # the epoch ended (map-style only: a streamed dataset never ends)
            progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
    bar.close()
    return last_eval


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Train MobileCLIP with 🤗 Accelerate.")
    parser.add_argument("--config", required=True, help="YAML file of TrainConfig keys (train/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of config keys, values parsed as YAML")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    training_function(load_config(args.config, args.overrides))


__all__ = ["JsonlTracker", "Progress", "TrainConfig", "build_optimizer", "compute_loss", "load_config", "lr_factor",
           "main", "training_function"]

if __name__ == "__main__":
    main()
