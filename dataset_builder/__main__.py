"""Command line: ``python -m dataset_builder INPUT OUTPUT_DIR [options]`` (or ``accelerate launch -m dataset_builder``).

Defaults reproduce DataCompDR: K=30 augmentations at 224 px, N=5 CoCa ViT-L-14 captions (top-p 0.9), teachers
open_clip ViT-L-14 ``openai`` and ``datacomp_xl_s13b_b90k``. Under ``accelerate launch`` shard i is built by process
``i % world_size``; rerun the same command to resume an interrupted build. Output layout: ``builder.py``.

Examples::

    python -m dataset_builder mlfoundations/DataComp-12M out/ --caption-column txt --image-column jpg \\
        --key-column __key__ --samples-per-shard 5000
    python -m dataset_builder ./my_imagefolder out/ --captioner none --syn-captions-column syn --num-augmentations 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import torch

from .builder import build_reinforced_dataset
from .captioner import load_captioner
from .card import finalize_dataset
from .teachers import load_teacher

DEFAULT_TEACHERS = ["openclip:ViT-L-14:openai", "openclip:ViT-L-14:datacomp_xl_s13b_b90k"]
DEFAULT_CAPTIONER = "openclip:coca_ViT-L-14:mscoco_finetuned_laion2b_s13b_b90k"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dataset_builder", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", help="Hub dataset id (streamed), local folder (imagefolder / parquet / webdataset tars) "
                                 "or parquet file")
    p.add_argument("output_dir")
    g = p.add_argument_group("input")
    g.add_argument("--split", default="train")
    g.add_argument("--config-name", default=None, help="dataset config of the input")
    g.add_argument("--data-files", nargs="*", default=None)
    g.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                   help="stream the input (default: yes for Hub ids, no for local paths)")
    g.add_argument("--image-column", default="image")
    g.add_argument("--caption-column", default="caption")
    g.add_argument("--key-column", default=None, help="unique sample key; default: the row index")
    g.add_argument("--url-column", default=None, help="stored as image_ref with --no-images")
    g.add_argument("--max-samples", type=int, default=None, help="only the first N rows (quick runs)")
    g = p.add_argument_group("reinforcement")
    g.add_argument("--teachers", nargs="+", default=DEFAULT_TEACHERS,
                   help="'openclip:<model>:<pretrained>' or 'hf:<hub id or folder>', in embedding order")
    g.add_argument("--captioner", default=DEFAULT_CAPTIONER,
                   help="'openclip:<model>:<pretrained>', 'hf:<id>' or 'none'")
    g.add_argument("--syn-captions-column", default=None, help="with --captioner none: column of synthetic captions")
    g.add_argument("--num-augmentations", type=int, default=30)
    g.add_argument("--num-synthetic-captions", type=int, default=5)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--teacher-resolution", type=int, default=224, help="resolution the augmentations are sampled at")
    g.add_argument("--crop-scale", type=float, nargs=2, default=[0.08, 1.0], metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area range of the stored augmentations")
    g = p.add_argument_group("output")
    g.add_argument("--num-shards", type=int, default=None)
    g.add_argument("--samples-per-shard", type=int, default=1000)
    g.add_argument("--dtype", choices=["float16", "float32", "bfloat16"], default="float16",
                   help="embedding storage (bfloat16: bf16-rounded values stored as float32)")
    g.add_argument("--no-images", action="store_true", help="store no image bytes, only image_ref")
    g.add_argument("--format", choices=["parquet", "datacompdr"], default="parquet",
                   help="datacompdr: also write Apple's webdataset layout to OUTPUT_DIR/datacompdr")
    g.add_argument("--embedding-format", choices=["npz", "pth.gz"], default="npz", help="with --format datacompdr")
    g.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload the finished dataset")
    g = p.add_argument_group("compute")
    g.add_argument("--batch-size", type=int, default=32, help="samples per teacher batch (x K images)")
    g.add_argument("--num-workers", type=int, default=4, help="DataLoader workers decoding and augmenting")
    g.add_argument("--model-dtype", choices=list(DTYPES), default=None,
                   help="teacher/captioner dtype (default: float16 on GPU, float32 on CPU)")
    g.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def load_input(args: argparse.Namespace):
    """The input dataset (map-style for local paths unless --streaming, streamed for Hub ids)."""
    import datasets

    streaming = args.streaming if args.streaming is not None else not os.path.exists(args.input)
    if os.path.isfile(args.input):
        dataset = datasets.load_dataset("parquet", data_files=args.input, split=args.split, streaming=streaming)
    else:
        dataset = datasets.load_dataset(args.input, args.config_name, data_files=args.data_files, split=args.split,
                                        streaming=streaming)
    if args.max_samples:
        dataset = dataset.take(args.max_samples) if streaming else dataset.select(range(args.max_samples))
    return dataset


def wait_and_finalize(output_dir: str, poll_s: float = 30.0) -> dict:
    """Finalize once every shard exists. Polls the files instead of a collective barrier, whose timeout a long,
    uneven build would exceed; the other processes simply exit when their shards are done."""
    while True:
        try:
            return finalize_dataset(output_dir)
        except RuntimeError as err:  # shards still missing
            logging.getLogger(__name__).warning("waiting for other processes: %s", err)
            time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    state = PartialState()
    dtype = DTYPES[args.model_dtype or ("float16" if state.device.type == "cuda" else "float32")]
    teachers = [load_teacher(spec, state.device, dtype) for spec in args.teachers]
    captioner = load_captioner(args.captioner, state.device, dtype)
    report = build_reinforced_dataset(
        load_input(args), args.output_dir, teachers, captioner, image_column=args.image_column,
        caption_column=args.caption_column, key_column=args.key_column, url_column=args.url_column,
        syn_captions_column=args.syn_captions_column, num_augmentations=args.num_augmentations,
        num_synthetic_captions=args.num_synthetic_captions, seed=args.seed, num_shards=args.num_shards,
        samples_per_shard=args.samples_per_shard, batch_size=args.batch_size, num_workers=args.num_workers,
        dtype=args.dtype, store_images=not args.no_images, aug_resolution=args.teacher_resolution,
        crop_scale=args.crop_scale, source=args.input, rank=state.process_index, world_size=state.num_processes,
        progress=not args.no_progress)
    if not state.is_main_process:
        return
    report = report or wait_and_finalize(args.output_dir)
    if args.format == "datacompdr":
        from .datacompdr import write_datacompdr

        write_datacompdr(args.output_dir, os.path.join(args.output_dir, "datacompdr"), args.embedding_format)
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=args.push_to_hub, folder_path=args.output_dir, repo_type="dataset",
                          ignore_patterns=[".build/*", "data/.tmp-*"])
    summary = {k: v for k, v in report.items() if k != "skipped_examples"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()


__all__ = ["DEFAULT_CAPTIONER", "DEFAULT_TEACHERS", "load_input", "main", "parse_args", "wait_and_finalize"]
