"""The 7B-shape GPU script, run at its smallest case on the CPU (no GPU here)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_7b_shape.py"


def test_the_7b_shape_script_runs_its_smallest_case_on_the_cpu(tmp_path):
    out = tmp_path / "shape.json"
    command = [sys.executable, str(SCRIPT), "--smallest", "--device", "cpu", "--repeats", "1", "--steps", "1"]
    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert set(report["latency_s"]) == {"small batch 1", "small batch 2"}
    for row in report["latency_s"].values():
        assert row["full_s"] > 0 and row["low_s"] > 0 and row["crops_s"] > 0
        assert 0.25 < row["rtr_crops"] < 1  # the teacher-forced call fetched one quadrant
    for stage in ("sft", "grpo"):
        assert report["training"][stage]["steps"] == 1 and report["training"][stage]["seconds_per_step"] > 0
