"""Two CPU processes (torchrun, gloo) train DINO for a few steps and end with the same teacher and center."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from common.checkpoints import load as load_checkpoint
from common.env import repo_root


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_end_with_identical_teachers(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun (installed with torch) not found"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "scripts.train_dino",
        "--profile",
        "tiny",
        "--max-steps",
        "3",
        "--num-workers",
        "0",
        "--no-eval",
        "--dump-teacher",
        str(tmp_path),
        "--checkpoint",
        str(tmp_path / "dino.pt"),
    ]
    result = subprocess.run(cmd, cwd=repo_root(), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [load_checkpoint(tmp_path / f"teacher_rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    for key, value in ranks[0]["teacher"].items():
        torch.testing.assert_close(
            ranks[1]["teacher"][key], value, rtol=0, atol=0, msg=f"teacher {key} differs"
        )
    torch.testing.assert_close(ranks[1]["center"], ranks[0]["center"], rtol=0, atol=0)
    assert ranks[0]["center"].abs().sum() > 0  # the center was updated from (all-reduced) teacher outputs
    # the teacher moved away from the student's initial weights, identically on both processes
    final = load_checkpoint(tmp_path / "dino.pt")
    assert final["step"] == 3 and final["config"]["epochs"] == 2
