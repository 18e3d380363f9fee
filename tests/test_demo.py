"""The Fashion-MNIST demo (README's main job) end to end, as a smoke run: every stage, a few steps each."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_quick_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, os.path.join(REPO, "examples", "fashion_mnist", "demo.py"), "--quick",
                          "--output", str(out)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["teachers"]) == {"teacher_mci_wide", "teacher_mci_deep"}
    assert set(results["students"]) == {"student_reinforced", "student_clip"}
    for metrics in [*results["teachers"].values(), *results["students"].values()]:
        assert 0 <= metrics["zeroshot_top1"] <= metrics["zeroshot_top5"] <= 1
        assert metrics["text_to_image_R@1"] <= metrics["text_to_image_R@5"] <= metrics["text_to_image_R@10"]
    # Four evaluations per student (every step), each at batch 128: the curve's x axis is samples seen.
    assert [s for s, _ in results["curves"]["student_clip"]] == [128, 256, 384, 512]
    efficiency = results["learning_efficiency"]
    assert efficiency["baseline_final_top1"] == results["curves"]["student_clip"][-1][1]
    assert efficiency["reinforced_final_top1"] == results["curves"]["student_reinforced"][-1][1]
    assert (efficiency["ratio"] is None) == (efficiency["reinforced_samples_to_reach_it"] is None)
    info = json.loads((out / "reinforced" / "reinforcement.json").read_text())
    assert [t["dim"] for t in info["teachers"]] == [128, 128] and info["num_augmentations"] == 2
    assert (out / "accuracy.png").stat().st_size > 0
    assert "learning efficiency:" in run.stdout and "pipeline on test image 0" in run.stdout


def test_learning_efficiency_ratio():
    sys.path.insert(0, os.path.join(REPO, "examples", "fashion_mnist"))
    from demo import learning_efficiency

    reinforced, baseline = [(100, 0.5), (200, 0.8), (300, 0.85)], [(100, 0.4), (200, 0.6), (300, 0.8)]
    efficiency = learning_efficiency(reinforced, baseline)
    assert efficiency["reinforced_samples_to_reach_it"] == 200 and efficiency["ratio"] == 1.5
    assert efficiency["baseline_samples_to_reach_reinforced_final"] is None
    efficiency = learning_efficiency(baseline, reinforced)  # the other way round: not reached, converse 2/3
    assert efficiency["ratio"] is None and efficiency["converse_ratio"] == 200 / 300
