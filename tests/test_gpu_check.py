"""``scripts/gpu-check.sh`` and its summary, on the CPU: the no-GPU exit, the dry run, the step limits, and
the table and verdict from a results folder laid out as the script lays it out."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from ffmix.bench import gpucheck

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"


def _run(*args, env=None):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_without_a_gpu_one_line_and_a_non_zero_exit(tmp_path):
    done = _run(env={"CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_OUT": str(tmp_path / "out")})
    assert done.returncode == 3
    assert len(done.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in done.stderr
    assert done.stdout == "" and not (tmp_path / "out").exists()


def test_dry_run_lists_every_step_within_eight_minutes(tmp_path):
    done = _run("--dry-run", env={"GPU_CHECK_OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "nodata")})
    assert done.returncode == 0, done.stderr
    limits = {name: int(s) for name, s in re.findall(r"^  (\w+) \(limit (\d+) s\)", done.stdout, re.M)}
    assert list(limits) == ["tests", "data", "bench", "train"]
    assert sum(limits.values()) <= 480 - 10      # room for the GPU probe and the summary
    assert "-m gpu" in done.stdout and "bench e2e --device cuda" in done.stdout and "timm_fast_collate" in done.stdout
    assert "--device cuda" in done.stdout.split("train (limit")[1]
    assert str(tmp_path / "out") in done.stdout and not (tmp_path / "out").exists()


def test_unknown_option_is_refused():
    done = _run("--fast")
    assert done.returncode == 2 and "unknown option" in done.stderr


def _folder(tmp_path, *, accuracy=0.9452, bench_rc=0, ffmix_ok=True, device="cuda"):
    folder = tmp_path / "gc"
    (folder / "train").mkdir(parents=True)
    (folder / "steps.tsv").write_text(f"tests\t0\t31.0\nbench\t{bench_rc}\t150.2\ntrain\t0\t120.5\n")
    (folder / "tests.log").write_text("...\n3 passed, 250 deselected in 29.12s\n")
    rows = [{"dataset": "rgb32", "pipeline": key, "images_per_s": rate, "device": device,
             "check": {"ok": ffmix_ok if key == "ffmix" else True}}
            for key, rate in (("ffmix", 1_500_000.0), ("timm_fast_collate", 100_000.0), ("memcpy", 9e9))]
    (folder / "bench-e2e-cuda.json").write_text(json.dumps({"results": {"e2e": rows}}))
    lines = [{"epoch": e, "val_acc": accuracy - 0.01 * (12 - e), "elapsed": 10.0 * e} for e in range(1, 13)]
    (folder / "train" / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return folder


def test_summary_table_of_a_good_run(tmp_path):
    folder = _folder(tmp_path)
    assert gpucheck.main([str(folder)]) == 0
    text = (folder / "summary.md").read_text()
    assert text.count("\n|") >= 4 and "all steps held" in text
    assert "3 passed" in text and "94.52%" in text and "120 s of training" in text
    assert "1,500,000" in text and "15×" in text                      # ffmix ÷ timm's GPU path
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["ok"] and summary["train"]["accuracy"] == pytest.approx(0.9452)


@pytest.mark.parametrize("change, shown", [
    (dict(accuracy=0.9391), "FAILED (result)"),
    (dict(bench_rc=124), "TIMED OUT"),
    (dict(ffmix_ok=False), "failed their checks"),
    (dict(device="cpu"), "not delivered to a CUDA device"),
])
def test_summary_fails_loudly(tmp_path, change, shown, capsys):
    folder = _folder(tmp_path, **change)
    assert gpucheck.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert shown in out and "gpu-check: FAILED" in out


def test_summary_of_a_folder_without_results(tmp_path, capsys):
    assert gpucheck.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert gpucheck.main([str(tmp_path / "empty")]) == 1
    assert "not run" in capsys.readouterr().out
