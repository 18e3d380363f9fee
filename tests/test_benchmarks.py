"""The latency benchmark's smoke mode runs end to end and writes the documented JSON, so the script cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"


def test_latency_smoke(tmp_path):
    pytest.importorskip("onnxruntime")
    output = tmp_path / "latency.json"
    # A subprocess, as the script is run: it sets torch's thread count and imports from its own folder.
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--output", str(output)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(output.read_text())
    assert {"meta", "results", "goals"} <= report.keys()
    assert report["meta"]["smoke"] is True
    assert set(report["results"]) == {"tiny-mci-mct", "tiny-vit"}
    for variant, result in report["results"].items():
        assert result["setup"]["onnx"]["image_encoder"]["max_abs_diff"]["3"] <= 1e-4
        for batch in ("batch_1", "batch_2"):
            assert set(result[batch]) == {"image", "text", "model"}
            for tower, group in result[batch].items():
                candidates = group["candidates"]
                assert {"ours train-time", "ours reparam", "ours onnxruntime"} <= candidates.keys(), (variant, tower)
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
