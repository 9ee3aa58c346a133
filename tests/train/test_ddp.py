"""The same training command under ``torchrun --nproc_per_node=2`` (DDP, gloo on CPU): both
processes end with identical parameters, and the loss falls; SIGTERM to one process stops
both at the same step with a checkpoint, and (slow) the resumed run ends bit-identical."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqzoo.train import checkpoint as ckpt
from seqzoo.train import compose, resolve
from seqzoo.train.faults import EXIT_PREEMPTED
from seqzoo.train.loop import build_run_model, param_hash
from tests.train.helpers import REPO, child_env

OVERRIDES = ["steps=40", "log_every=10", "batch_size=16", "train_size=256", "val_size=32", "test_size=32",
             "dropout=0.1", "ckpt_every=5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}", "-m", "seqzoo.cli", "train", "--task", "listops", "--layer", "s4d",
            "--preset", "quick", "--out", str(out), "--threads", "1", *OVERRIDES]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ddp") / "ddp"
    proc = subprocess.run(_torchrun(out), cwd=REPO, env=child_env(data_root), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, proc


def test_torchrun_two_processes_gloo(uninterrupted):
    out, proc = uninterrupted
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


def _worker_of_rank(parent: int, rank: int) -> int:
    """The pid of torchrun's worker process with RANK=rank (Linux /proc)."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env:
                return int(child)
    raise AssertionError(f"no worker with RANK={rank} under pid {parent}")


@pytest.fixture(scope="module")
def preempted(tmp_path_factory, data_root):
    """The torchrun run with SIGTERM sent to rank 1 only (schedulers do not signal every
    process at one instant) as soon as it has a checkpoint: (run folder, stderr)."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("finds the worker processes through /proc")
    out = tmp_path_factory.mktemp("ddp_preempted") / "ddp"
    proc = subprocess.Popen(_torchrun(out), cwd=REPO, env=child_env(data_root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while ckpt.latest(out) is None:
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 180 s"
        time.sleep(0.01)
    os.kill(_worker_of_rank(proc.pid, 1), signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-3000:]  # torchrun reports its failed workers
    return out, err


def test_sigterm_to_one_rank_stops_both_at_the_same_step(preempted):
    """Both ranks stop after the same step, rank 0 writes that step's checkpoint (with
    both ranks' random states) and the workers exit with 75."""
    out, err = preempted
    stops = {int(r): int(s) for r, s in re.findall(r"rank (\d): preempted by SIGTERM at step (\d+)", err)}
    assert stops.keys() == {0, 1} and stops[0] == stops[1], err[-3000:]
    assert f"exitcode  : {EXIT_PREEMPTED}" in err  # at least the signalled worker's status reaches torchrun
    step = stops[0]
    assert 5 <= step <= 40 and ckpt.latest(out) == ckpt.folder(out, step)
    model = build_run_model(resolve(compose("listops", "s4d", preset="quick", overrides=OVERRIDES)))
    assert len(ckpt.load(ckpt.latest(out), model)["rng"]) == 2
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "preempted"] == [step]


@pytest.mark.slow
def test_the_same_torchrun_command_resumes_exactly(preempted, uninterrupted, data_root):
    out, _ = preempted
    step = int(ckpt.latest(out).name.split("-")[1])
    again = subprocess.run(_torchrun(out), cwd=REPO, env=child_env(data_root), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    resumed = json.loads((out / "result.json").read_text())
    clean = json.loads((uninterrupted[0] / "result.json").read_text())
    assert resumed["resumed_from"] == str(ckpt.folder(out, step))
    assert resumed["param_hashes"] == clean["param_hashes"] and resumed["value"] == clean["value"]
