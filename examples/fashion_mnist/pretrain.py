"""Pretrains the demo's two teachers and its captioner, once, on Fashion-MNIST images the student never sees.

The student's 6,000 training images are the shipped `data/train.parquet` (`prepare.py`'s class-balanced subset of
Fashion-MNIST's 60,000); the teachers and the captioner train on the other 54,000 (Debian's `dataset-fashion-mnist`,
`apt-get install dataset-fashion-mnist`), with clean captions (`captions.clean_captions`: the class name in a prompt
template, or a short description of the class) and the augmentation family of the reinforcement: a random resized
crop followed by RandAugment (`dataset_builder.augment`, with `CROP_SCALE` and `MAGNITUDE` below), freshly sampled
for every image and epoch.

* teachers: two MobileCLIP dual encoders with MCi (convolutional) image towers, two seeds, each with a small text
  tower (width 32: the 49,408-token embedding table is most of a model), trained with UniCL's form of the CLIP loss
  (every caption of the image's class counts as a positive, see `train_teacher`), sixteen epochs each;
* captioner: a `VisionEncoderDecoderModel` (a tiny ViT encoder, a tiny GPT-2 decoder with cross-attention) and a
  word-level tokenizer, saved with a `TrOCRProcessor` so that `AutoProcessor` loads it (dataset_builder's
  `TransformersCaptioner`), trained with teacher forcing to write a clean caption of the image.

Weights are saved in float16 (checked: zero-shot accuracy within 0.2 points of float32), the sha256 of every file in
`pretrained/SHA256SUMS`, which the demo checks before loading, and the test accuracies in `pretrained/pretrain.json`.
Seeded: every random choice (initial weights, data order, augmentations, caption choice) comes from a fixed seed, so
rerunning gives the same teachers and captioner up to float rounding (bit for bit on the same machine, library
versions and thread count: the committed teachers were trained twice, and the second run's files had the same
sha256). Measured on a 2-vCPU Intel Xeon, the two teachers as two processes in parallel: 23 minutes per teacher, 90.4%
and 90.7% zero-shot top-1 on the demo's 1,000 test images (90.2% / 90.6% before the cast to float16). The captioner
took 18 minutes, trained alongside the earlier, narrower teachers; it learns the captions' wording faster than the
images: after 1.5 epochs 24% of its sampled captions name the true class (chance: 10%).

    python examples/fashion_mnist/pretrain.py [--root /usr/share/datasets/fashion-mnist] [--only teacher_mci_seed0 ...]
"""

import argparse
import hashlib
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dataset_builder.augment import apply_augmentation, sample_augmentations, seed_for_key
from modeling_mobileclip import (
    MobileCLIPConfig,
    MobileCLIPImageProcessor,
    MobileCLIPModel,
    MobileCLIPProcessor,
    MobileCLIPTextConfig,
    MobileCLIPTokenizer,
    MobileCLIPVisionConfig,
)
from modeling_mobileclip.atomic import write_json

# This folder is on sys.path when run as a script (or imported by demo.py): `captions` and `prepare` are found there.
from captions import CLASS_NAMES, TEMPLATES, caption_class, clean_captions
from prepare import balanced_subset, load_idx

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAINED = os.path.join(HERE, "pretrained")
IMAGE_SIZE = 28  # Fashion-MNIST's own size
CONTEXT_LENGTH = 20  # the longest clean caption is 13 tokens, web alt-text 9
# Augmentation family shared with the reinforcement (demo.py): crops keep 60-100% of the 28-px image (DataCompDR's
# 8% would leave 8x8 pixels), then RandAugment with 2 ops as in DataCompDR, at magnitude 3 of 31 rather than its 9,
# which is harsh on 28 pixels: a student distilled on views at 3 ended 3 points higher on the clean test images than
# on views at 9 (63.4% vs 60.2%, one seed, 480 steps).
CROP_SCALE = (0.6, 1.0)
MAGNITUDE = 3
TEXT = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1)
# Two MCi image towers (convolutional; at 32 px, so that the stride-32 stages end on a 1x1 map), of two seeds (initial
# weights, data order, augmentations). ViT towers learnt far slower here: 71% after 3 epochs against the MCi's 76%
# after 1. Narrower towers (embed_dims 24-192) stayed below 90%: 89.2% / 88.2% after 8 epochs, 89.2% / 88.6% after 12;
# they distilled as good a student (59.7% against 58.2%, the demo's settings).
MCI = dict(epochs=16.0, image_size=32, architecture="fastvit_mci0",
           model_args={"layers": [1, 1, 2, 1], "embed_dims": [32, 64, 128, 256]})
TEACHERS = {"teacher_mci_seed0": MCI, "teacher_mci_seed1": MCI}
PROJECTION_DIM = 128


def model_config(vision: dict, text: dict = TEXT, projection_dim: int = PROJECTION_DIM) -> MobileCLIPConfig:
    """A small MobileCLIP dual encoder (`vision` holds `image_size`) with a `CONTEXT_LENGTH`-token text tower."""
    return MobileCLIPConfig(
        text_config=MobileCLIPTextConfig(projection_dim=projection_dim, max_position_embeddings=CONTEXT_LENGTH,
                                         **text),
        vision_config=MobileCLIPVisionConfig(projection_dim=projection_dim, **vision),
        projection_dim=projection_dim)


def mobileclip_processor(size: int = IMAGE_SIZE) -> MobileCLIPProcessor:
    image_processor = MobileCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                               resample=2)  # bilinear, as the demo's students train
    return MobileCLIPProcessor(image_processor, MobileCLIPTokenizer(model_max_length=CONTEXT_LENGTH))


def teacher_split(root: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's training images minus the student's 6,000 (`prepare.py`'s subset): (54000, 28, 28), labels."""
    images, labels = load_idx(root, "train")
    keep = np.ones(len(labels), bool)
    keep[balanced_subset(labels, 600, 0)] = False
    return images[keep], labels[keep]


class AugmentedImages(torch.utils.data.Dataset):
    """Image i of epoch e: a fresh crop + RandAugment seeded by (seed, e, i), replayed at `size`, as [0, 1] pixels
    (MobileCLIP processors do not normalise); with a clean caption index drawn from the same seed."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, seed: int, num_captions: int):
        self.images, self.labels, self.size, self.seed, self.num_captions = images, labels, size, seed, num_captions
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        sample_seed = seed_for_key(f"{self.epoch}:{i}", self.seed)
        image = Image.fromarray(self.images[i])  # grey: RandAugment's colour op is a no-op on it, as on RGB copies
        params = sample_augmentations((28, 28), 1, sample_seed, output_size=self.size, scale=CROP_SCALE,
                                      magnitude=MAGNITUDE)[0]
        pixels = torch.from_numpy(np.asarray(apply_augmentation(image, params, self.size, "bilinear"))).float()
        return (pixels / 255.0).expand(3, -1, -1), int(self.labels[i]), sample_seed % self.num_captions


def loader(dataset: AugmentedImages, batch_size: int, seed: int, epoch: int):
    dataset.epoch = epoch
    order = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=order, drop_last=True,
                                       num_workers=1, persistent_workers=False)


def cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def test_images(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo's 1,000 test images (the shipped subset), resized like the students' processors, and labels."""
    from datasets import load_dataset

    test = load_dataset("parquet", data_files=os.path.join(HERE, "data", "test.parquet"), split="train")
    pixels = torch.stack([torch.from_numpy(np.array(image.convert("L").resize((size, size), Image.BILINEAR)))
                          for image in test["image"]]).float().div(255.0)
    return pixels[:, None].expand(-1, 3, -1, -1), torch.tensor(test["label"])


@torch.no_grad()
def zero_shot_top1(model, tokenizer, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    prompts = [t.format(name) for name in CLASS_NAMES for t in TEMPLATES]
    ids = tokenizer(prompts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                    return_tensors="pt")["input_ids"]
    text = F.normalize(model.get_text_features(input_ids=ids).pooler_output.float(), dim=-1)
    classes = F.normalize(text.view(len(CLASS_NAMES), len(TEMPLATES), -1).mean(1), dim=-1)
    image = torch.cat([model.get_image_features(pixel_values=chunk.to(model.dtype)).pooler_output.float()
                       for chunk in pixels.split(500)])
    model.train()
    return ((F.normalize(image, dim=-1) @ classes.T).argmax(1) == labels).float().mean().item()


def train_teacher(name: str, images, labels, epochs: float | None, batch_size: int, lr: float, seed: int,
                  out: str) -> dict:
    torch.manual_seed(seed)
    vision = dict(TEACHERS[name])
    epochs = epochs or vision.pop("epochs")
    vision.pop("epochs", None)
    # Channels-last: a training step takes half the time of the default layout's (Intel Xeon, one thread, batch 256).
    model = MobileCLIPModel(model_config(vision)).to(memory_format=torch.channels_last)
    size = vision["image_size"]
    processor = mobileclip_processor(size)
    captions = [clean_captions(c) for c in range(len(CLASS_NAMES))]
    tokens = torch.stack([processor.tokenizer(c, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                                              return_tensors="pt")["input_ids"] for c in captions])  # (10, 12, L)
    dataset = AugmentedImages(images, labels, size, seed, tokens.shape[1])
    steps_per_epoch = len(dataset) // batch_size
    total = int(epochs * steps_per_epoch)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine(s, total, min(200, total // 10 + 1)))
    test_pixels, test_labels = test_images(size)
    print(f"[{name}] {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {total} steps x "
          f"{batch_size} on {len(dataset)} images ({epochs} epochs)", flush=True)
    step, start, model = 0, time.time(), model.train()
    while step < total:
        for pixels, label, caption in loader(dataset, batch_size, seed, step // steps_per_epoch):
            outputs = model(input_ids=tokens[label, caption],
                            pixel_values=pixels.contiguous(memory_format=torch.channels_last))
            logits = model.logit_scale.exp() * outputs.image_embeds @ outputs.text_embeds.T
            # UniCL: every caption of the image's class is a positive (they all describe it correctly), instead of
            # CLIP's one, which would push apart the ~25 same-class pairs of each batch.
            same = (label[:, None] == label[None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            if step % 25 == 0 or step == total:
                acc = zero_shot_top1(model, processor.tokenizer, test_pixels, test_labels) \
                    if step % 100 == 0 or step == total else float("nan")
                print(f"[{name}] step {step}/{total} loss {loss.item():.3f} zero-shot {100 * acc:.1f}% "
                      f"({time.time() - start:.0f} s)", flush=True)
            if step == total:
                break
    fp32 = zero_shot_top1(model, processor.tokenizer, test_pixels, test_labels)
    model = model.to(memory_format=torch.contiguous_format).half()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    fp16 = zero_shot_top1(MobileCLIPModel.from_pretrained(out, dtype=torch.float32), processor.tokenizer,
                          test_pixels, test_labels)
    return {"zeroshot_top1_fp32": fp32, "zeroshot_top1": fp16, "steps": total, "batch_size": batch_size,
            "seconds": round(time.time() - start)}


def word_tokenizer(captions: list[str]):
    """A word-level tokenizer over the clean captions' words (split on whitespace), with [PAD] [BOS] [EOS] [UNK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for c in captions for w in c.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]", model_max_length=CAPTION_LENGTH)


CAPTION_LENGTH = 16  # tokens of a caption, [EOS] included (the longest clean caption has 9 words)


def captioner_model(vocab_size: int):
    """A VisionEncoderDecoderModel: ViT encoder (4x4-px patches) and a GPT-2 decoder with cross-attention."""
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    encoder = ViTConfig(image_size=IMAGE_SIZE, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=128)
    # 32 positions: dataset_builder's captioner generates up to 30 new tokens.
    decoder = GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=2, n_inner=128,
                         n_positions=32, add_cross_attention=True, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.update(decoder_start_token_id=1, bos_token_id=1, pad_token_id=0, eos_token_id=2,
                                   max_new_tokens=CAPTION_LENGTH)
    return model


def train_captioner(images, labels, epochs: float, batch_size: int, lr: float, seed: int, out: str) -> dict:
    """Teacher-forced cross-entropy on clean captions (without the final "."), images augmented as the teachers'."""
    from transformers import TrOCRProcessor, ViTImageProcessor

    torch.manual_seed(seed)
    captions = [[c.rstrip(".") for c in clean_captions(k)] for k in range(len(CLASS_NAMES))]
    tokenizer = word_tokenizer([c for per_class in captions for c in per_class])
    ids = [tokenizer([c + " [EOS]" for c in per_class], padding="max_length", max_length=CAPTION_LENGTH,
                     truncation=True, return_tensors="pt")["input_ids"] for per_class in captions]
    labels_ids = torch.stack(ids).masked_fill(torch.stack(ids) == 0, -100)  # (10, 12, L), padding ignored
    model = captioner_model(len(tokenizer))
    # [0, 1] pixels normalised to [-1, 1]; processors resize PIL images with bilinear filtering, as the teachers'.
    processor = TrOCRProcessor(ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=2,
                                                 image_mean=[0.5] * 3, image_std=[0.5] * 3), tokenizer)
    dataset = AugmentedImages(images, labels, IMAGE_SIZE, seed, labels_ids.shape[1])
    steps_per_epoch = len(dataset) // batch_size
    total = int(epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine(s, total, min(200, total // 10 + 1)))
    print(f"[captioner] {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary "
          f"{len(tokenizer)}, {total} steps x {batch_size}", flush=True)
    step, start = 0, time.time()
    model.train()
    while step < total:
        for pixels, label, caption in loader(dataset, batch_size, seed, step // steps_per_epoch):
            loss = model(pixel_values=(pixels - 0.5) / 0.5, labels=labels_ids[label, caption]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            step += 1
            if step % 25 == 0 or step == total:
                print(f"[captioner] step {step}/{total} loss {loss.item():.3f} ({time.time() - start:.0f} s)",
                      flush=True)
            if step == total:
                break
    model = model.half()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {"steps": total, "batch_size": batch_size, "seconds": round(time.time() - start),
            **caption_accuracy(out)}


@torch.no_grad()
def caption_accuracy(path: str, num_images: int = 500) -> dict:
    """How often a sampled caption (dataset_builder's captioner, top-p 0.9) names the test image's class."""
    from datasets import load_dataset

    from dataset_builder.captioner import TransformersCaptioner

    captioner = TransformersCaptioner.from_pretrained(path)
    test = load_dataset("parquet", data_files=os.path.join(HERE, "data", "test.parquet"), split="train")
    test = test.select(range(num_images))
    texts = captioner.caption([im.convert("RGB") for im in test["image"]], 2, list(range(num_images)))
    named = [caption_class(t) for per_image in texts for t in per_image]
    truth = [label for label in test["label"] for _ in range(2)]
    return {"caption_names_true_class": sum(n == t for n, t in zip(named, truth)) / len(truth),
            "caption_examples": texts[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--output", default=PRETRAINED)
    parser.add_argument("--only", nargs="*", default=None,
                        help=f"any of {', '.join(TEACHERS)}, captioner (default: all)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="teachers' epochs over the 54,000 images (default: each teacher's in TEACHERS)")
    parser.add_argument("--captioner-epochs", type=float, default=1.5)
    # One thread: on a busy machine, OpenMP threads spin waiting for each other (3x the CPU time per step here);
    # run the three parts as three processes instead (--only).
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = teacher_split(args.root)
    os.makedirs(args.output, exist_ok=True)
    report_path = os.path.join(args.output, "pretrain.json")
    jobs = {name: lambda name=name, seed=seed: train_teacher(name, images, labels, args.epochs, 256, 2e-3, seed,
                                                             os.path.join(args.output, name))
            for seed, name in enumerate(TEACHERS)}
    jobs["captioner"] = lambda: train_captioner(images, labels, args.captioner_epochs, 256, 2e-3, 2,
                                                os.path.join(args.output, "captioner"))
    for name, job in jobs.items():
        if args.only is None or name in args.only:
            result = job()
            # Read just before writing: other processes (--only) may have added their parts since this one started.
            report = {}
            if os.path.exists(report_path):
                with open(report_path) as f:
                    report = json.load(f)
            write_json(report_path, {**report, name: result})
            print(f"[{name}] {result}", flush=True)
    write_checksums(args.output)


def write_checksums(folder: str) -> None:
    """`SHA256SUMS` (sha256sum's format) of every model file under `folder`."""
    lines = []
    for dirpath, _, files in sorted(os.walk(folder)):
        for file in sorted(files):
            path = os.path.join(dirpath, file)
            if file in ("SHA256SUMS", "pretrain.json"):
                continue
            with open(path, "rb") as f:
                lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {os.path.relpath(path, folder)}\n")
    with open(os.path.join(folder, "SHA256SUMS"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
