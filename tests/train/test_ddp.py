"""The same training command under ``torchrun --nproc_per_node=2`` (DDP, gloo on CPU): both
processes end with identical parameters, and the loss falls."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from seqzoo.train import checkpoint as ckpt
from seqzoo.train import compose, resolve
from seqzoo.train.loop import build_run_model, param_hash
from tests.train.helpers import REPO, child_env

OVERRIDES = ["steps=40", "log_every=10", "batch_size=16", "train_size=256", "val_size=32", "test_size=32",
             "dropout=0.1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo(tmp_path, data_root):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "seqzoo.cli", "train", "--task", "listops", "--layer", "s4d",
           "--preset", "quick", "--out", str(out), "--threads", "1",
           *OVERRIDES]
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(data_root), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2
    # each process hashed its own weights at the end: DDP kept them identical
    hashes = result["param_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    # rank 0's final checkpoint holds exactly those weights
    model = build_run_model(resolve(compose("listops", "s4d", preset="quick", overrides=OVERRIDES)))
    before = param_hash(model)
    ckpt.load(ckpt.latest(out), model)
    assert param_hash(model) == hashes[0] != before
    # the loss (averaged over both processes) fell
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.1, losses
    # rank-0 logging: one result line on stdout, not two
    assert proc.stdout.count("run folder:") == 1
