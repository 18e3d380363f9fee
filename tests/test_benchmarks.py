"""The benchmarks' smoke modes run end to end and write the documented JSON, so the scripts cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m benchmarks.<name>` from the repository root, as the README runs it (a subprocess: the benchmarks set
    torch's thread count)."""
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_latency_smoke(tmp_path):
    pytest.importorskip("onnxruntime")
    output = tmp_path / "latency.json"
    run = _module("latency", "--smoke", "--output", str(output), timeout=300)
    report = json.loads(output.read_text())
    assert {"meta", "results", "goals"} <= report.keys()
    assert report["meta"]["smoke"] is True
    assert set(report["results"]) == {"tiny-mci-mct", "tiny-vit"}
    for variant, result in report["results"].items():
        assert result["setup"]["onnx"]["image_encoder"]["max_abs_diff"]["3"] <= 1e-4
        assert result["setup"]["openvino"]["precision"] == "f32"  # the smoke run's float32
        for batch in ("batch_1", "batch_2"):
            assert set(result[batch]) == {"image", "text", "model"}
            for tower, group in result[batch].items():
                candidates = group["candidates"]
                assert {"ours train-time", "ours reparam", "ours onnxruntime", "ours onnxruntime int8", "ours openvino",
                        "ours openvino int8"} <= candidates.keys(), (variant, tower)
                for stats in candidates.values():
                    assert {"median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "params_m", "peak_mem_delta_mb",
                            "times_ms"} <= stats.keys()
                    assert len(stats["times_ms"]) == 2 and stats["median_ms"] > 0
                assert group["ratios_vs_ours_reparam"]["ours reparam"]["paired"] == 1.0
            assert "timm reparam" in result[batch]["image"]["candidates"]
            assert "HF CLIP ViT-B/16" in result[batch]["model"]["candidates"]
    assert all({"goal", "variant", "speedup", "target", "met"} <= g.keys() for g in report["goals"])
    assert (tmp_path / "latency.md").read_text().startswith("Device:")
    assert "| ours reparam |" in run.stdout


def _tiny_model(folder: Path) -> str:
    """A tiny model with its processor, saved: a train.py student and a dataset_builder `hf:` teacher."""
    from modeling_mobileclip import (
        MobileCLIPImageProcessor,
        MobileCLIPModel,
        MobileCLIPProcessor,
        MobileCLIPTokenizer,
    )
    from modeling_mobileclip.testing_utils import tiny_config

    config = tiny_config()
    size, context_length = config.vision_config.image_size, config.text_config.max_position_embeddings
    MobileCLIPModel(config).save_pretrained(folder)
    MobileCLIPProcessor(
        MobileCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        MobileCLIPTokenizer(model_max_length=context_length),
    ).save_pretrained(folder)
    return str(folder)


def test_train_throughput_smoke(tmp_path):
    model = _tiny_model(tmp_path / "tiny")
    out = tmp_path / "train.json"
    run = _module("train_throughput", "--student", model, "--teacher", model, "--batch-size", "4", "--warmup", "1",
                  "--steps", "2", "--k", "2", "--n", "1", "--num-workers", "0", "--data-epochs", "1",
                  "--data-rounds", "2", "--data-images", "16", "--out", str(out))
    result = json.loads(out.read_text())
    assert set(result["train"]) == set(result["data_per_worker"]) == {"reinforced", "clip", "online_distill"}
    for recipe, train in result["train"].items():
        assert train["steps"] == 2 and 0 < train["min"] <= train["samples_per_s"] <= train["max"], recipe
        assert train["peak_memory_mb"] > 0, recipe  # the resident high-water mark over the run, on CPU
        assert set(result["data_per_worker"][recipe]) == {"exact", "fast_jpeg_decode", "fast_resize",
                                                          "fast_resize + fast_jpeg_decode"}, recipe
        assert all(value > 0 for value in result["data_per_worker"][recipe].values()), recipe
        assert all(len(rounds) == 2 for rounds in result["data_per_worker_rounds"][recipe].values()), recipe
    assert result["bytes_per_sample"] > 2 * 1536 * 2  # two fp16 1536-d rows (K=2) at least, plus the JPEG
    assert "| online_distill |" in run.stdout and (tmp_path / "train.md").exists()


def test_train_throughput_without_the_data_pipeline(tmp_path):
    """`--data-rounds 0` (the GPU suite's setting) measures training alone, on a `--data-dir` that a second run of the
    same sizes reuses and one of other sizes refuses; `--data-only` then has nothing to do."""
    model = _tiny_model(tmp_path / "tiny")
    out, data = tmp_path / "train.json", tmp_path / "data"
    common = ("--student", model, "--warmup", "1", "--steps", "1", "--k", "2", "--n", "1", "--num-workers", "0",
              "--recipes", "clip", "--data-rounds", "0", "--data-dir", str(data), "--out", str(out))
    run = _module("train_throughput", "--batch-size", "4", *common)
    result = json.loads(out.read_text())
    assert result["train"]["clip"]["steps"] == 1 and result["data_per_worker"] == {}
    assert "reducible_crops" not in result and result["bytes_per_sample"] > 2 * 1536 * 2
    assert "not measured" in run.stdout and "| clip |" in run.stdout and "| - | - | - | - |" in run.stdout
    shards = {p: p.stat().st_mtime_ns for p in data.rglob("*.parquet")}
    assert shards
    _module("train_throughput", "--batch-size", "4", *common)
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*.parquet")} == shards  # reused, not rebuilt
    other = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--batch-size", "2", *common],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert other.returncode != 0 and "was built with other settings" in other.stderr
    refused = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--batch-size", "4", *common,
                              "--data-only"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert refused.returncode == 2 and ">= 1 with --data-only" in refused.stderr


def test_gpu_suite_reports_a_failed_step_and_still_packs_its_results(tmp_path):
    suite = [str(REPO / "benchmarks" / "gpu_suite.sh")]
    usage = subprocess.run(["bash", *suite], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    run = subprocess.run(["bash", *suite, "check", str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "STEPS": "no-such-step"})
    assert run.returncode == 1 and "failed or timed out: no-such-step" in run.stdout
    assert "unknown step 'no-such-step'" in (tmp_path / "suite.log").read_text()
    assert (tmp_path / "gpu_results.tar.gz").exists()


def test_reinforce_throughput_smoke(tmp_path):
    model = _tiny_model(tmp_path / "tiny")
    out = tmp_path / "reinforce.json"
    run = _module("reinforce_throughput", "--teachers", f"hf:{model}", f"hf:{model}", "--captioner", "none",
                  "--num-images", "2", "--k", "2", "--repeats", "1", "--num-workers", "0", "--out", str(out))
    result = json.loads(out.read_text())
    stages = result["stages"]
    assert {"decode + augment", "write"} <= stages.keys() and len(stages) == 2 + 2 * 2  # images and texts per teacher
    assert all(s["samples_per_s"] > 0 and s["s_per_sample"] > 0 for s in stages.values())
    assert result["args"]["n"] == 0 and result["end_to_end"]["samples_per_s"] > 0
    assert result["storage"]["bytes_per_sample_per_column"]["image_emb"] > 0
    assert "**end to end**" in run.stdout


def test_precision_smoke(tmp_path):
    """bf16 (eager, OpenVINO) and int8 (onnxruntime, OpenVINO) against float32 on the demo's committed teacher and
    real test images (a few of them)."""
    out = tmp_path / "precision.json"
    run = _module("precision", "--max-samples", "40", "--num-calibration", "64", "--min-cosine", "0.9", "--output",
                  str(out))
    results = json.loads(out.read_text())["results"]
    assert list(results) == ["float32 eager", "bfloat16 eager (optimize_for_inference)", "int8 onnxruntime",
                             "bfloat16 OpenVINO", "int8 OpenVINO (NNCF; bfloat16 elsewhere)"]
    assert results["float32 eager"]["agreement_with_float32"] == 1.0
    for name, r in results.items():
        assert 0.9 <= r["image_cosine_to_float32"]["min"] <= 1.0 + 1e-6, name
        assert 0.8 <= r["agreement_with_float32"] <= 1.0, name
    assert "| int8 onnxruntime |" in run.stdout and (tmp_path / "precision.md").exists()
