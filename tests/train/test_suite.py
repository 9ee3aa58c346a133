"""The benchmark suite (tables, JSON lines, plot, reuse of finished runs) and the full
preset starting: every task's full config trains one step on tiny data."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

import seqzoo.tasks
from seqzoo.cli import app
from seqzoo.train import compose, train
from seqzoo.train.suite import plan_suite, published_table, results_table, run_suite

TINY = ["steps=6", "log_every=3", "train_size=64", "val_size=16", "test_size=16", "batch_size=8"]


def test_suite_writes_results_table_and_plot(tmp_path, data_root):
    out = tmp_path / "suite"
    s = run_suite("quick", out, layers=["s4d", "attention"], tasks=["adding", "listops"], overrides=TINY, jobs=1,
                  data_root=data_root, progress=False, log=lambda *a: None)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task"], r["layer"]) for r in lines] == [("adding", "s4d"), ("adding", "attention"),
                                                       ("listops", "s4d"), ("listops", "attention")]
    for r in lines:
        assert r["steps"] == 6 and r["test"]["n"] == 16 and isinstance(r["beats_chance"], bool)
        assert (out / "runs" / r["task"] / r["layer"] / "result.json").is_file()
    md = (out / "results.md").read_text()
    assert "| s4d " in md and "| attention " in md and "| chance " in md and "adding (MSE ↓, L=64)" in md
    for r in lines:  # every cell's number and verdict is in the table
        assert f"{r['value']:.3f} {'✓' if r['beats_chance'] else '✗'}" in md
    # the published LRA numbers sit beside the full preset's results only, never beside toy sizes
    assert "published" not in md and "59.60" not in md
    pytest.importorskip("matplotlib")
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 4 and summary["cpu_s"] > 0 and summary["above_chance"] == sum(
        r["beats_chance"] for r in lines)
    assert s.table in md or s.table.split("\n", 2)[2] in md
    # a second call reuses the finished runs (same config): no training at all
    again = run_suite("quick", out, layers=["s4d", "attention"], tasks=["adding", "listops"], overrides=TINY,
                      jobs=1, data_root=data_root, progress=False, log=lambda *a: None)
    assert [r["param_hashes"] for r in again.results] == [r["param_hashes"] for r in lines]
    assert again.wall_s < s.wall_s


def test_results_tables_format():
    def res(layer, task, value, chance, ok, metric="accuracy"):
        return {"layer": layer, "task": task, "value": value, "chance": chance, "beats_chance": ok, "metric": metric,
                "seq_len": {"test": 10}, "test": {"normalised": 0.0}}

    rows = [res("s4", "listops", 0.6, 0.17, True), res("s4", "text", 0.5, 0.5, False),
            res("gau", "listops", 0.4, 0.17, True), res("gau", "adding", 0.01, 0.16, True, "mse")]
    t = results_table(rows)
    assert "| s4 " in t and "0.600 ✓" in t and "0.500 ✗" in t and "| chance " in t and "0.170" in t
    p = published_table(rows)
    assert "| s4 (S4), recipe common " in p and "60.0 / 59.60" in p and "50.0 / 86.82" in p  # ours / published
    assert "Text: `text` (substitute)" in p and "ListOps: `listops` (faithful)" in p
    assert "| gau, recipe common " in p and "40.0" in p and "/ 36.37" not in p.split("| gau")[1].split("\n")[0]


@pytest.mark.parametrize("task", seqzoo.tasks.list_tasks())
def test_full_preset_starts(task, tmp_path, data_root):
    """The full config of every task (its S4 hyper-parameters, full sequence length, the
    full task options) trains one step: only the model and the split sizes are shrunk."""
    cfg = compose(task, "s4d", preset="full", overrides=["d_model=8", "n_layers=1", "batch_size=2", "train_size=2",
                                                         "val_size=2", "test_size=2", "steps=1", "eval_batch_size=2"])
    full = compose(task, "s4d", preset="full")
    assert cfg.task_options == full.task_options and cfg.lr == full.lr and cfg.warmup_steps == full.warmup_steps
    torch.manual_seed(0)
    r = train(cfg, None, progress=False, log=lambda *a: None, data_root=data_root)
    assert r["steps"] == 1 and r["history"] and torch.isfinite(torch.tensor(r["history"][0]["loss"]))
    assert r["seq_len"]["train"] == seqzoo.tasks.task_info(task, **full.task_options).seq_len  # full length


def test_full_dry_run_builds_every_model():
    r = CliRunner().invoke(app, ["bench", "lra", "--preset", "full", "--dry-run", "--layers", "s4d,s5,mamba",
                                 "--tasks", "listops,pathx"])
    assert r.exit_code == 0, r.output
    assert "6 runs validated and built" in r.output and "| pathx " in r.output and "16384" in r.output
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in r.output.splitlines()
            if line.startswith("| ") and not line.startswith("| task")}
    assert "| s4 " in rows[("listops", "s4d")] and "post-BN, no MLP" in rows[("listops", "s4d")]
    assert "state-spaces/s4@e757cef configs/experiment/lra/s4-listops.yaml" in rows[("listops", "s4d")]
    assert "lindermanlab/S5@3c18fdb bin/run_experiments/run_lra_pathx.sh" in rows[("pathx", "s5")]
    assert "| common " in rows[("pathx", "mamba")] and "configs/lra/pathx.yaml (seqzoo's common recipe)" in rows[
        ("pathx", "mamba")] and "pre-LN, MLP x2" in rows[("pathx", "mamba")]


def test_dry_run_estimate_times_each_run(data_root, monkeypatch):
    """--estimate N: every run's time per step (the training loop on its data) and its
    training minutes (steps x that time), and the total; only with --dry-run."""
    monkeypatch.setenv("SEQZOO_DATA", str(data_root))
    args = ["bench", "lra", "--preset", "quick", "--dry-run", "--layers", "s4d,attention", "--tasks", "adding",
            "--threads", "1", "train_size=64", "val_size=16", "test_size=16", "batch_size=8", "d_model=16"]
    r = CliRunner().invoke(app, [*args, "--estimate", "1"])
    assert r.exit_code == 0, r.output
    rows = [line.split("|") for line in r.output.splitlines() if line.startswith("| adding")]
    assert len(rows) == 2
    cols = [c.strip() for c in next(line for line in r.output.splitlines() if line.startswith("| task")).split("|")]
    ms, minutes, steps = cols.index("ms / step"), cols.index("train min"), cols.index("steps")
    for row in rows:
        assert float(row[ms]) > 0
        assert float(row[minutes]) == pytest.approx(float(row[ms]) / 1000 * int(row[steps]) / 60, abs=0.06)
    assert re.search(r"2 runs: \d+ minutes of training with 1 thread\(s\) each \(from 1 timed steps per run", r.output)
    bad = CliRunner().invoke(app, [*args[:4], "--estimate", "1"])
    assert bad.exit_code != 0 and "--estimate times the runs of a --dry-run: add --dry-run" in bad.output


def test_plan_suite_covers_every_layer_and_task():
    cells = plan_suite("quick")
    assert {(c.layer, c.task) for c in cells} == {(l, t) for l in seqzoo.list_layers() for t in seqzoo.tasks.list_tasks()}
