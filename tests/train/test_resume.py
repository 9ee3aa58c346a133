"""A run killed with SIGKILL mid-way and started again ends with exactly the parameters of
a run never interrupted (seeded, CPU, one thread: deterministic)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from seqzoo.train import checkpoint as ckpt
from seqzoo.train import compose, train
from tests.train.helpers import REPO, child_env, run_cli

# adding (a synthetic task: fresh samples every epoch), dropout on (the RNG state must be
# restored), a train split of 48 items = 3 batches per epoch, so checkpoints every 10
# steps fall mid-epoch; checkpoints keep only the newest.
ARGS = ["train", "--task", "adding", "--layer", "s4d", "--preset", "quick", "--threads", "1",
        "steps=80", "ckpt_every=10", "log_every=10", "train_size=48", "batch_size=16", "dropout=0.1",
        "val_size=16", "test_size=16", "keep_checkpoints=1"]


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.latest(run) / ckpt.MODEL))


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, data_root):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-m", "seqzoo.cli", *ARGS, "--out", str(killed)], cwd=REPO,
                            env=child_env(data_root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # kill it as soon as it has written a checkpoint (well before step 80)
    deadline = time.monotonic() + 120
    while ckpt.latest(killed) is None:
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = int(ckpt.latest(killed).name.split("-")[1])
    assert 10 <= step_at_kill < 80 and not (killed / "result.json").exists()

    resumed = run_cli([*ARGS, "--out", str(killed)], data_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the uninterrupted run, in this process (one thread, as the CLI's --threads 1)
    overrides = [a for a in ARGS if "=" in a]
    train(compose("adding", "s4d", preset="quick", overrides=overrides), clean, progress=False, log=lambda *a: None,
          data_root=data_root)

    r_killed = json.loads((killed / "result.json").read_text())
    r_clean = json.loads((clean / "result.json").read_text())
    assert r_killed["resumed_from"] is not None and r_clean["resumed_from"] is None
    assert int(r_killed["resumed_from"].rsplit("-", 1)[1]) >= step_at_kill
    a, b = _weights(killed), _weights(clean)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after the resume"
    assert r_killed["param_hashes"] == r_clean["param_hashes"]
    # the same losses logged at the same steps, and the same test metric
    assert [h["loss"] for h in r_killed["history"]] == [h["loss"] for h in r_clean["history"]]
    assert r_killed["value"] == r_clean["value"]
    # and training did something: the weights moved from their initial values
    assert r_clean["history"][-1]["loss"] < r_clean["history"][0]["loss"]
