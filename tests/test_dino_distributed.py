"""Two CPU processes (torchrun, gloo) train DINO for a few steps and end with the same teacher and center."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from common import reference_models as ref
from common.checkpoints import load as load_checkpoint
from common.course import repo_root
from common.runtime import seed_everything


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
    final = load_checkpoint(tmp_path / "dino.pt")
    assert final["step"] == 3 and final["dino_config"]["epochs"] == 2
    # the teacher moved away from the initial weights (the same seed builds them here), identically everywhere
    seed_everything(0)
    initial = ref.new_dino("tiny").teacher.state_dict()
    moved = [k for k, v in ranks[0]["teacher"].items() if not torch.equal(v, initial[k])]
    assert moved, "the EMA did not change the teacher"
    assert len(moved) > len(initial) // 2, f"only {moved} changed"
    step = max((ranks[0]["teacher"][k] - initial[k]).abs().max().item() for k in moved)
    assert step < 1e-2, f"the teacher is not 3 EMA steps from its start (max change {step}): another init?"
