"""Command line: ``python -m dataset_builder INPUT OUTPUT_DIR [options]`` (or ``accelerate launch -m dataset_builder``).

Defaults reproduce DataCompDR: K=30 augmentations at 224 px, N=5 CoCa ViT-L-14 captions (top-p 0.9), teachers
open_clip ViT-L-14 ``openai`` and ``datacomp_xl_s13b_b90k``. Under ``accelerate launch`` shard i is built by process
``i % world_size``; with ``--engine ray`` the workers of a Ray cluster build them (``ray_engine.py``), each loading
the models itself. Rerun the same command to resume an interrupted build. Output layout: ``builder.py``.
Arguments and input columns are checked before any model is loaded; a shard skipping more than
``--max-skipped-fraction`` of its rows, an empty build and keys repeated across shards fail (exit status 1) and leave
the folder unfinalised.

Examples::

    python -m dataset_builder mlfoundations/DataComp-12M out/ --caption-column txt --image-column jpg \\
        --key-column __key__ --samples-per-shard 5000
    python -m dataset_builder ./my_imagefolder out/ --captioner none --syn-captions-column syn --num-augmentations 2
    python -m dataset_builder mlfoundations/DataComp-12M out/ --caption-column txt --image-column jpg \\
        --key-column __key__ --engine ray --ray-address auto --ray-gpus-per-worker 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from modeling_mobileclip.atomic import TEMPORARY_INFIX

from .builder import DEFAULT_MAX_SKIPPED_FRACTION, BuildError, build_reinforced_dataset, check_input
from .captioner import load_captioner
from .card import MissingShardsError, finalize_dataset
from .ray_engine import RayEngine
from .teachers import MODEL_DTYPES, load_teacher, model_dtype

DEFAULT_TEACHERS = ["openclip:ViT-L-14:openai", "openclip:ViT-L-14:datacomp_xl_s13b_b90k"]
DEFAULT_CAPTIONER = "openclip:coca_ViT-L-14:mscoco_finetuned_laion2b_s13b_b90k"
RAY_OPTIONS = ("ray_address", "ray_workers", "ray_gpus_per_worker", "ray_cpus_per_worker")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" message
    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


_non_negative.__name__ = "float"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


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
    g.add_argument("--max-samples", type=_int_at_least(1), default=None, help="only the first N rows (quick runs)")
    g = p.add_argument_group("reinforcement")
    g.add_argument("--teachers", nargs="+", default=DEFAULT_TEACHERS,
                   help="'openclip:<model>:<pretrained>' or 'hf:<hub id or folder>', in embedding order")
    g.add_argument("--captioner", default=DEFAULT_CAPTIONER,
                   help="'openclip:<model>:<pretrained>', 'hf:<id>' or 'none'")
    g.add_argument("--syn-captions-column", default=None, help="with --captioner none: column of synthetic captions")
    g.add_argument("--num-augmentations", type=_int_at_least(1), default=30)
    g.add_argument("--num-synthetic-captions", type=_int_at_least(0), default=5)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--teacher-resolution", type=_int_at_least(1), default=224,
                   help="resolution the augmentations are sampled at")
    g.add_argument("--crop-scale", type=float, nargs=2, default=[0.08, 1.0], metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area range of the stored augmentations")
    g.add_argument("--license", help="Hub licence id for the dataset card (the source data's, teachers' and "
                                     "captioner's terms apply to the result)")
    g.add_argument("--rand-augment-magnitude", type=int, choices=range(31), default=9, metavar="0-30",
                   help="RandAugment magnitude bin of the stored augmentations (DataCompDR: 9; less for small images)")
    g.add_argument("--max-skipped-fraction", type=_fraction, default=DEFAULT_MAX_SKIPPED_FRACTION,
                   help="fail when a shard skips more than this fraction of its rows (bad images or captions, see "
                        "report.json); a wrong column or format skips nearly all. 1 accepts any; an empty build "
                        "always fails")
    g = p.add_argument_group("output")
    g.add_argument("--num-shards", type=_int_at_least(1), default=None)
    g.add_argument("--samples-per-shard", type=_int_at_least(1), default=1000)
    g.add_argument("--dtype", choices=["float16", "float32", "bfloat16"], default="float16",
                   help="embedding storage (bfloat16: bf16-rounded values stored as float32)")
    g.add_argument("--no-images", action="store_true", help="store no image bytes, only image_ref")
    g.add_argument("--format", choices=["parquet", "datacompdr"], default="parquet",
                   help="datacompdr: also write Apple's webdataset layout to OUTPUT_DIR/datacompdr")
    g.add_argument("--embedding-format", choices=["npz", "pth.gz"], default="npz", help="with --format datacompdr")
    g.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload the finished dataset")
    g = p.add_argument_group("compute")
    g.add_argument("--batch-size", type=_int_at_least(1), default=32, help="samples per teacher batch (x K images)")
    g.add_argument("--num-workers", type=_int_at_least(0), default=4,
                   help="DataLoader workers decoding and augmenting")
    g.add_argument("--model-dtype", choices=list(MODEL_DTYPES), default=None,
                   help="teacher/captioner dtype (default: float16 on GPU, float32 on CPU)")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (or each process of accelerate launch); ray: the workers of a Ray "
                        "cluster, each loading the models itself")
    g.add_argument("--ray-address", default=None,
                   help="with --engine ray: 'auto' (the cluster this node belongs to) or the head's host:port "
                        "(default: RAY_ADDRESS, else a Ray instance on this machine)")
    g.add_argument("--ray-workers", type=_int_at_least(1), default=None,
                   help="with --engine ray: target number of workers (default: as many as the cluster holds)")
    g.add_argument("--ray-gpus-per-worker", type=_non_negative, default=None,
                   help="with --engine ray: GPUs per worker (default: 1 if the cluster has GPUs, else 0)")
    g.add_argument("--ray-cpus-per-worker", type=_non_negative, default=None,
                   help="with --engine ray: CPUs per worker (default: 1 + --num-workers; less if a node's CPUs "
                        "rather than its GPUs limit the workers it holds)")
    args = p.parse_args(argv)
    # Checked here, before any model is loaded.
    if args.captioner == "none" and args.syn_captions_column is None and args.num_synthetic_captions:
        p.error("--captioner none needs --syn-captions-column (or --num-synthetic-captions 0)")
    if args.captioner != "none" and args.syn_captions_column is not None:
        p.error("--syn-captions-column is read only with --captioner none")
    if args.engine != "ray" and any(getattr(args, name) is not None for name in RAY_OPTIONS):
        p.error(f"{', '.join('--' + n.replace('_', '-') for n in RAY_OPTIONS)} are options of --engine ray")
    return args


def load_input(args: argparse.Namespace):
    """The input dataset (map-style for local paths unless --streaming, streamed for Hub ids)."""
    import datasets

    from modeling_mobileclip.paths import check_local_path

    check_local_path(args.input, "Input dataset")  # a mistyped local path fails here, not as a Hub error
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
        except MissingShardsError as err:
            logging.getLogger(__name__).warning("waiting for other processes: %s", err)
            time.sleep(poll_s)


def build(args: argparse.Namespace) -> dict | None:
    """Build (this process's shards of) the dataset; on the main process, wait for the others and finalise. With
    ``--engine ray`` this process is the driver and the workers load the models from their specs."""
    from accelerate import PartialState

    state = PartialState()
    dataset = load_input(args)
    columns = dict(image_column=args.image_column, caption_column=args.caption_column, key_column=args.key_column,
                   url_column=args.url_column, syn_captions_column=args.syn_captions_column)
    check_input(dataset, **columns)  # before loading the models: a wrong column fails in seconds
    if args.engine == "ray":
        engine = RayEngine(address=args.ray_address, num_workers=args.ray_workers,
                           num_gpus_per_worker=args.ray_gpus_per_worker, num_cpus_per_worker=args.ray_cpus_per_worker,
                           model_dtype=args.model_dtype)
        teachers, captioner = args.teachers, None if args.captioner == "none" else args.captioner
    else:
        engine, dtype = None, model_dtype(args.model_dtype, state.device)
        teachers = [load_teacher(spec, state.device, dtype) for spec in args.teachers]
        captioner = load_captioner(args.captioner, state.device, dtype)
    # How the input was read decides the rows: part of the resume fingerprint.
    input_options = {"split": args.split, "config_name": args.config_name, "data_files": args.data_files,
                     "max_samples": args.max_samples}
    report = build_reinforced_dataset(
        dataset, args.output_dir, teachers, captioner, **columns, num_augmentations=args.num_augmentations,
        num_synthetic_captions=args.num_synthetic_captions, seed=args.seed, num_shards=args.num_shards,
        samples_per_shard=args.samples_per_shard, batch_size=args.batch_size, num_workers=args.num_workers,
        dtype=args.dtype, store_images=not args.no_images, aug_resolution=args.teacher_resolution,
        crop_scale=args.crop_scale, rand_augment_magnitude=args.rand_augment_magnitude, source=args.input,
        license=args.license,
        input_options=input_options,
        max_skipped_fraction=args.max_skipped_fraction, rank=state.process_index, world_size=state.num_processes,
        progress=not args.no_progress, engine=engine)
    if not state.is_main_process:
        return None
    return report or wait_and_finalize(args.output_dir)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = build(args)
    except BuildError as err:  # bad input or a failed build: a message, not a traceback
        raise SystemExit(f"error: {err}") from err
    if report is None:  # not the main process
        return
    if args.format == "datacompdr":
        from .datacompdr import write_datacompdr

        write_datacompdr(args.output_dir, os.path.join(args.output_dir, "datacompdr"), args.embedding_format)
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=args.push_to_hub, folder_path=args.output_dir, repo_type="dataset",
                          ignore_patterns=[".build/*", f"*{TEMPORARY_INFIX}*"])  # what a killed writer left
    summary = {k: v for k, v in report.items() if k != "skipped_examples"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()


__all__ = ["DEFAULT_CAPTIONER", "DEFAULT_TEACHERS", "build", "load_input", "main", "parse_args", "wait_and_finalize"]
