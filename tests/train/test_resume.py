"""A run stopped mid-way and started again ends with exactly the parameters of a run never
interrupted (seeded, CPU, one thread: deterministic): after SIGKILL (resume from the last
periodic checkpoint), after SIGTERM through the CLI (exit status 75, a checkpoint at the
stop step) and after SIGUSR1 in-process (stop at a known step)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from seqzoo.train import checkpoint as ckpt
from seqzoo.train import compose, loop, train
from seqzoo.train.faults import EXIT_PREEMPTED, Preempted
from tests.train.helpers import REPO, child_env, run_cli

# adding (a synthetic task: fresh samples every epoch), dropout on (the RNG state must be
# restored), a train split of 48 items = 3 batches per epoch, so checkpoints every 10
# steps fall mid-epoch; checkpoints keep only the newest.
ARGS = ["train", "--task", "adding", "--layer", "s4d", "--preset", "quick", "--threads", "1",
        "steps=80", "ckpt_every=10", "log_every=10", "train_size=48", "batch_size=16", "dropout=0.1",
        "val_size=16", "test_size=16", "keep_checkpoints=1"]
OVERRIDES = [a for a in ARGS if "=" in a]


def _quiet(*a, **k):
    pass


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.latest(run) / ckpt.MODEL))


def _train_one_thread(out, data_root) -> None:
    """The run of ARGS in this process, with one thread as the CLI's --threads 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose("adding", "s4d", preset="quick", overrides=OVERRIDES), out, progress=False, log=_quiet,
              data_root=data_root)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    """The run never interrupted."""
    clean = tmp_path_factory.mktemp("uninterrupted") / "clean"
    _train_one_thread(clean, data_root)
    result = json.loads((clean / "result.json").read_text())
    assert result["resumed_from"] is None
    # training did something: the loss fell
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    return clean, result


def _assert_same_as_uninterrupted(run, uninterrupted) -> dict:
    clean, r_clean = uninterrupted
    r_run = json.loads((run / "result.json").read_text())
    assert r_run["resumed_from"] is not None
    a, b = _weights(run), _weights(clean)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after the resume"
    assert r_run["param_hashes"] == r_clean["param_hashes"]
    # the same losses logged at the same steps, and the same test metric
    assert [h["loss"] for h in r_run["history"]] == [h["loss"] for h in r_clean["history"]]
    assert r_run["value"] == r_clean["value"]
    return r_run


def _start_and_signal(out, data_root, sig: int) -> subprocess.Popen:
    """Start the CLI run; send ``sig`` as soon as it has written its first checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "seqzoo.cli", *ARGS, "--out", str(out)], cwd=REPO,
                            env=child_env(data_root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while ckpt.latest(out) is None:
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    return proc


def _events(run, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == kind]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, data_root, uninterrupted):
    killed = tmp_path / "killed"
    proc = _start_and_signal(killed, data_root, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = int(ckpt.latest(killed).name.split("-")[1])
    assert 10 <= step_at_kill < 80 and not (killed / "result.json").exists()

    resumed = run_cli([*ARGS, "--out", str(killed)], data_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    r = _assert_same_as_uninterrupted(killed, uninterrupted)
    assert int(r["resumed_from"].rsplit("-", 1)[1]) >= step_at_kill


def test_sigterm_checkpoints_exits_75_then_resumes_exactly(tmp_path, data_root, uninterrupted):
    """SIGTERM: the step in progress finishes, a checkpoint of that step is written, the log
    says so and the CLI exits with 75; the same command then ends bit-identical."""
    run = tmp_path / "preempted"
    proc = _start_and_signal(run, data_root, signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    [event] = _events(run, "preempted")
    stop = event["step"]
    assert event["signal"] == "SIGTERM" and 10 <= stop <= 80
    # the checkpoint is of the stop step itself (not only the last periodic one), and verifies
    assert ckpt.latest(run) == ckpt.folder(run, stop) and event["checkpoint"] == str(ckpt.folder(run, stop))
    assert ckpt.verify(ckpt.latest(run)) is None
    assert f"preempted by SIGTERM at step {stop}" in err and not (run / "result.json").exists()

    # the same run again (in-process to save a start-up; the CLI's resume is the SIGKILL test's)
    _train_one_thread(run, data_root)
    r = _assert_same_as_uninterrupted(run, uninterrupted)
    assert r["resumed_from"] == str(ckpt.folder(run, stop))
    assert _events(run, "resumed")[-1]["step"] == stop


def test_sigusr1_stops_at_the_step_it_arrives_in(tmp_path, data_root, uninterrupted, monkeypatch):
    """SIGUSR1 raised inside the forward of step 23 (in-process, so the step is known): the
    run stops after step 23 with a checkpoint of it, and resuming ends bit-identical."""
    build = loop.build_run_model
    calls = {"n": 0}

    def signal_in_step_23(plan):
        model = build(plan)

        def hook(module, args, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] == 23:
                    signal.raise_signal(signal.SIGUSR1)

        model.register_forward_hook(hook)
        return model

    run = tmp_path / "usr1"
    before = signal.getsignal(signal.SIGUSR1)
    monkeypatch.setattr(loop, "build_run_model", signal_in_step_23)
    with pytest.raises(Preempted, match="preempted by SIGUSR1 at step 23") as stopped:
        _train_one_thread(run, data_root)
    assert stopped.value.step == 23 and stopped.value.checkpoint == ckpt.folder(run, 23)
    assert ckpt.latest(run) == ckpt.folder(run, 23)
    assert [(e["signal"], e["step"]) for e in _events(run, "preempted")] == [("SIGUSR1", 23)]
    assert signal.getsignal(signal.SIGUSR1) == before  # the handler is gone again when train returns
    monkeypatch.setattr(loop, "build_run_model", build)
    _train_one_thread(run, data_root)
    r = _assert_same_as_uninterrupted(run, uninterrupted)
    assert r["resumed_from"] == str(ckpt.folder(run, 23))
