"""Faults a long run meets: a damaged checkpoint (found by its manifest, skipped for the
previous one), and a step whose loss or gradients are not finite (stop naming the step and
parameter, or skip the update)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from seqzoo.config import ConfigError
from seqzoo.train import checkpoint as ckpt
from seqzoo.train import compose, loop, train
from seqzoo.train.faults import NonFiniteError, clip_grads_, grad_norm

OVERRIDES = ["steps=40", "ckpt_every=10", "keep_checkpoints=3", "log_every=10", "train_size=48", "batch_size=16",
             "dropout=0.1", "val_size=16", "test_size=16"]


def _quiet(*a, **k):
    pass


def _train(out, data_root, overrides=OVERRIDES, log=_quiet):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and fast on a shared machine
    try:
        return train(compose("adding", "s4d", preset="quick", overrides=overrides), out, progress=False, log=log,
                     data_root=data_root)
    finally:
        torch.set_num_threads(threads)


def _events(run, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == kind]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor's data: the header still parses
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- manifests
def test_a_checkpoint_verifies_until_a_file_changes(tmp_path):
    model = nn.Linear(3, 2)
    path = ckpt.save(tmp_path, 5, model, {"step": 5})
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    assert set(manifest["files"]) == {ckpt.MODEL, ckpt.STATE} and manifest["step"] == 5
    assert manifest["files"][ckpt.MODEL]["bytes"] == (path / ckpt.MODEL).stat().st_size
    assert ckpt.verify(path) is None

    _flip_last_byte(path / ckpt.MODEL)
    # the flip is silent to safetensors: the file loads, with one weight changed
    assert not torch.equal(load_file(str(path / ckpt.MODEL))["weight"], model.weight.detach())
    assert "model.safetensors does not match its SHA-256" in ckpt.verify(path)
    _flip_last_byte(path / ckpt.MODEL)
    assert ckpt.verify(path) is None

    _truncate(path / ckpt.STATE)
    assert "state.pt has" in ckpt.verify(path) and "truncated" in ckpt.verify(path)
    (path / ckpt.STATE).unlink()
    assert ckpt.verify(path) == "state.pt is missing"
    (path / ckpt.MANIFEST).unlink()
    assert "no manifest.json" in ckpt.verify(path)


def test_resume_point_skips_damaged_checkpoints_and_fails_when_none_is_left(tmp_path):
    model = nn.Linear(3, 2)
    for step in (10, 20, 30):
        ckpt.save(tmp_path, step, model, {"step": step}, keep=3)
    assert ckpt.resume_point(tmp_path) == (ckpt.folder(tmp_path, 30), [])
    _truncate(ckpt.folder(tmp_path, 30) / ckpt.MODEL)
    _flip_last_byte(ckpt.folder(tmp_path, 20) / ckpt.STATE)
    found, skipped = ckpt.resume_point(tmp_path)
    assert found == ckpt.folder(tmp_path, 10)
    assert [p.name for p, _ in skipped] == ["step-00000030", "step-00000020"]
    assert "truncated" in skipped[0][1] and "SHA-256" in skipped[1][1]
    assert ckpt.latest(tmp_path) == ckpt.folder(tmp_path, 10)

    (ckpt.folder(tmp_path, 10) / ckpt.MANIFEST).unlink()
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.resume_point(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "checkpoints") in message and "--no-resume" in message
    assert all(f"step-000000{s}" in message for s in (10, 20, 30))
    assert ckpt.latest(tmp_path) is None
    assert ckpt.resume_point(tmp_path / "elsewhere") == (None, [])  # no checkpoints at all: a fresh run


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, data_root):
    """The uninterrupted run: checkpoints at steps 20, 30 and 40 are kept."""
    out = tmp_path_factory.mktemp("clean") / "run"
    result = _train(out, data_root)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-000000{s}" for s in (20, 30, 40)]
    return out, result


@pytest.mark.parametrize("damage", [_truncate, _flip_last_byte], ids=["truncated", "one-byte-flipped"])
def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_ends_as_if_uninterrupted(tmp_path, data_root,
                                                                                     clean_run, damage):
    """The state a kill between steps 30 and 40 leaves (checkpoints 20 and 30), with the
    newest one damaged: the run resumes from step 20, says and logs why, and ends with
    the weights and test metric of the uninterrupted run."""
    clean, r_clean = clean_run
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    shutil.rmtree(ckpt.folder(run, 40))
    (run / "result.json").unlink()
    damage(ckpt.folder(run, 30) / ckpt.MODEL)
    said = []
    r = _train(run, data_root, log=said.append)
    assert r["resumed_from"] == str(ckpt.folder(run, 20))
    # one line says which checkpoint was skipped and why; the log has it too
    why = "truncated" if damage is _truncate else "SHA-256"
    [line] = [s for s in said if s.startswith("skipping checkpoint")]
    assert str(ckpt.folder(run, 30)) in line and "model.safetensors" in line and why in line
    [event] = _events(run, "checkpoint_skipped")
    assert event["checkpoint"] == str(ckpt.folder(run, 30)) and why in event["reason"]
    assert _events(run, "resumed")[-1] == {"event": "resumed", "step": 20, "checkpoint": str(ckpt.folder(run, 20))}
    a, b = load_file(str(ckpt.folder(run, 40) / ckpt.MODEL)), load_file(str(ckpt.folder(clean, 40) / ckpt.MODEL))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert r["param_hashes"] == r_clean["param_hashes"] and r["value"] == r_clean["value"]
    assert ckpt.verify(ckpt.folder(run, 30)) is None  # the resumed run wrote step 30 again


def test_no_valid_checkpoint_is_a_clear_error(tmp_path, data_root, clean_run):
    run = tmp_path / "run"
    shutil.copytree(clean_run[0], run)
    for step in (20, 30, 40):
        _truncate(ckpt.folder(run, step) / ckpt.MODEL)
    with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint in .*checkpoints can be resumed from"):
        _train(run, data_root)
    assert len(_events(run, "no_valid_checkpoint")) == 1


# ---------------------------------------------------------------------------- non-finite steps
def test_grad_norm_and_clip_agree_with_clip_grad_norm():
    """The loop's norm-then-clip equals torch's clip_grad_norm_ (which clips NaN into
    every gradient, so the loop cannot call it before it knows the step is finite)."""
    torch.manual_seed(0)
    grads = [torch.randn(5, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)]
    for max_norm in (0.5, 100.0):  # clipped, and below the limit (unchanged)
        mine, ref = ([nn.Parameter(torch.zeros_like(g)) for g in grads] for _ in range(2))
        for a, b, g in zip(mine, ref, grads):
            a.grad, b.grad = g.clone(), g.clone()
        total = grad_norm([p.grad for p in mine])
        clip_grads_([p.grad for p in mine], max_norm, total)
        expected_total = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        assert torch.allclose(total.double(), expected_total, rtol=1e-6)
        assert all(torch.allclose(a.grad, b.grad, rtol=1e-6) for a, b in zip(mine, ref))
    mine[1].grad[3] = float("nan")
    assert not torch.isfinite(grad_norm([p.grad for p in mine]))


def _plant(monkeypatch, where: str, at_call: int):
    """Make the model's ``at_call``-th training step non-finite: ``grad:<param>`` gives that
    parameter a NaN gradient (the loss stays finite); ``input`` makes the encoder's output
    NaN (as a NaN in the input batch would), so the loss is NaN too."""
    build = loop.build_run_model
    calls = {"n": 0}

    def planted(plan):
        model = build(plan)
        if where == "input":
            def hook(module, args, output):
                if module.training:
                    calls["n"] += 1
                    if calls["n"] == at_call:
                        return output * float("nan")
                return output

            model.encoder.register_forward_hook(hook)
        else:
            param = dict(model.named_parameters())[where.split(":", 1)[1]]

            def grad_hook(grad):
                calls["n"] += 1
                return grad * float("nan") if calls["n"] == at_call else grad

            param.register_hook(grad_hook)
        return model

    monkeypatch.setattr(loop, "build_run_model", planted)


def test_a_nan_gradient_stops_the_run_naming_step_and_parameter(tmp_path, data_root, monkeypatch):
    """A NaN in the gradient of one inner parameter at step 17: the run stops there, names
    the step and that parameter, writes no checkpoint of the bad step (step 10 stays the
    newest), and the same run with on_nonfinite=skip resumes from it and finishes."""
    target = "blocks.0.mixer.log_dt"  # not the first parameter: the search must find this one
    run = tmp_path / "run"
    _plant(monkeypatch, f"grad:{target}", at_call=17)
    with pytest.raises(NonFiniteError) as err:
        _train(run, data_root)
    message = str(err.value)
    assert message.startswith("step 17: non-finite loss ") and f"first parameter with a non-finite gradient: {target}" in message
    assert "loss nan" not in message  # the loss itself was finite
    assert str(ckpt.folder(run, 10)) in message and "on_nonfinite=skip" in message
    assert ckpt.latest(run) == ckpt.folder(run, 10) and not (run / "result.json").exists()
    [event] = _events(run, "nonfinite")
    assert (event["step"], event["param"], event["action"]) == (17, target, "stop")

    # rerun with skip (allowed to differ on a resume): from step 10, the 7th step is step 17 again
    _plant(monkeypatch, f"grad:{target}", at_call=7)
    r = _train(run, data_root, overrides=[*OVERRIDES, "on_nonfinite=skip"])
    assert r["resumed_from"] == str(ckpt.folder(run, 10)) and r["steps"] == 40 and r["nonfinite_skips"] == 1
    skips = _events(run, "nonfinite")[1:]
    assert [(e["step"], e["param"], e["action"], e["skips"]) for e in skips] == [(17, target, "skip", 1)]


def test_skip_leaves_out_the_update_of_a_nan_batch_and_counts_it(tmp_path, data_root, monkeypatch):
    """A NaN batch at step 13 with on_nonfinite=skip: the run finishes, logs one skip, and
    the optimiser made 39 updates of 40 steps; the weights are finite."""
    run = tmp_path / "run"
    _plant(monkeypatch, "input", at_call=13)
    r = _train(run, data_root, overrides=[*OVERRIDES, "on_nonfinite=skip"])
    assert r["steps"] == 40 and r["nonfinite_skips"] == 1
    [event] = _events(run, "nonfinite")
    assert event["step"] == 13 and event["loss"] == "nan" and event["action"] == "skip" and event["skips"] == 1
    assert event["param"] == "encoder.weight"  # the NaN enters at the encoder's output
    rows = [h for h in r["history"] if h["step"] >= 20]
    assert all(h["nonfinite_skips"] == 1 for h in rows) and all(h["loss"] is not None for h in r["history"])
    state = torch.load(ckpt.folder(run, 40) / ckpt.STATE, weights_only=False)
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {39}  # AdamW's own update count
    weights = load_file(str(ckpt.folder(run, 40) / ckpt.MODEL))
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_on_nonfinite_is_checked():
    with pytest.raises(ConfigError, match="on_nonfinite = 'maybe' is not one of 'stop', 'skip'"):
        compose("adding", "s4d", preset="quick", overrides=["on_nonfinite=maybe"])


def test_the_cli_exits_1_on_a_nonfinite_step_and_2_without_a_valid_checkpoint(tmp_path, data_root, monkeypatch):
    """`seqzoo train`'s statuses for these faults, with a one-line message instead of a traceback."""
    from typer.testing import CliRunner

    from seqzoo.cli import app

    args = ["train", "--task", "adding", "--layer", "s4d", "--preset", "quick", "--threads", "1",
            "--out", str(tmp_path / "run"), "--data", str(data_root), *OVERRIDES]
    _plant(monkeypatch, "grad:blocks.0.mixer.log_dt", at_call=12)
    threads = torch.get_num_threads()  # --threads sets this process's count: restored after
    try:
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1, r.output
        assert "error: step 12: non-finite loss" in r.output and "blocks.0.mixer.log_dt" in r.output
        assert "Traceback" not in r.output

        _truncate(ckpt.folder(tmp_path / "run", 10) / ckpt.MODEL)  # the only checkpoint
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and "error: no checkpoint in" in r.output and "--no-resume" in r.output, r.output
    finally:
        torch.set_num_threads(threads)
