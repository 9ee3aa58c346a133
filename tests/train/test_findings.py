"""Presets that list their own experiments (suite.yaml): cells with per-layer tuning and
sweeps, evaluation at several test lengths, and the findings report beside the papers'
numbers. The real "papers" preset is checked to compose; a tiny preset runs end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seqzoo.config import ConfigError
from seqzoo.train import compose, resolve, train
from seqzoo.train.config import configs_dir
from seqzoo.train.findings import finding_checks, findings_report
from seqzoo.train.loop import length_test_split
from seqzoo.train.spec import columns_of, load_spec
from seqzoo.train.suite import plan_suite, run_suite

TINY = ["steps=4", "log_every=2", "eval_every=2", "train_size=32", "val_size=8", "test_size=8", "batch_size=8",
        "d_model=16", "n_layers=1"]


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A copy of configs/ to add presets to (SEQZOO_CONFIGS points at it)."""
    root = tmp_path / "configs"
    shutil.copytree(configs_dir(), root)
    monkeypatch.setenv("SEQZOO_CONFIGS", str(root))
    return root


def _preset(configs: Path, name: str, suite: str, defaults: str = "") -> None:
    folder = configs / "presets" / name
    folder.mkdir(parents=True)
    (folder / "suite.yaml").write_text(suite)
    (folder / "defaults.yaml").write_text(defaults or "steps: 4\nd_model: 16\nn_layers: 1\n")


def test_papers_preset_composes():
    """Every cell of the papers preset composes and validates; the sweep and the
    evaluation lengths are where the spec puts them."""
    spec = load_spec("papers")
    assert list(spec) == ["selective_copy", "induction_heads", "mqar", "image"]
    cells = plan_suite("papers")
    by_task = {}
    for c in cells:
        by_task.setdefault(c.task, []).append(c)
    assert {c.layer for c in by_task["selective_copy"]} == {"mamba", "mamba2", "s4", "s4d", "attention", "linear_attn"}
    assert {c.layer for c in by_task["image"]} >= {"s4", "s4d", "s5", "rtf"}
    mqar = by_task["mqar"]
    widths = {c.variant: c.config.d_model for c in mqar}
    assert widths and all(v == f"d_model={d}" for v, d in widths.items())
    assert sorted(widths.values()) == [64, 128]  # Zoology's first two widths
    assert len(mqar) == len(spec["mqar"].layers) * len(widths)
    attn = {c.config.d_model: (c.config.steps, c.config.lr) for c in mqar if c.layer == "attention"}
    assert attn == {64: (4000, 0.002), 128: (3000, 0.001)}  # the measured runs' settings
    assert all(c.config.mlp_ratio == 0 and c.config.task_options["random_fill"] is False for c in mqar)  # Zoology's Fig. 2
    for c in by_task["induction_heads"]:
        L = c.config.task_options["seq_len"]
        assert c.config.task_options["test_seq_len"] == L
        assert c.config.eval_lengths == [4 * L, 16 * L, 64 * L]
    for c in by_task["selective_copy"]:
        assert c.config.task_options == {**c.config.task_options, "seq_len": 256, "n_tokens": 16, "vocab_size": 16}
        assert c.config.d_model == 64 and c.config.n_layers == 2 and c.config.mlp_ratio == 0
        # the selective layers' recipe (lr 1e-2, Adam's beta2 0.95: robust over seeds); the others' defaults;
        # every layer the same number of steps
        want = (0.01, 0.95, 3000) if c.layer in ("mamba", "mamba2") else (0.003, 0.999, 3000)
        assert (c.config.lr, c.config.beta2, c.config.steps) == want, c.layer
    # every expectation of the issue is in the spec
    assert spec["selective_copy"].expect["mamba"] == {"test": 0.97}
    assert spec["induction_heads"].expect["mamba"] == {"1x": 0.99, "16x": 0.95}
    assert set(spec["mqar"].expect["attention"]) == set(widths)
    assert all(spec["image"].expect[layer] == {"test": 0.97} for layer in ("s4", "s4d", "s5"))
    with pytest.raises(ConfigError, match="preset 'papers' runs no layer 'transformer_vq'; its layers: attention"):
        plan_suite("papers", layers=["rtf", "transformer_vq"])
    assert {(c.task, c.layer) for c in plan_suite("papers", layers=["rtf"])} == {("image", "rtf")}


def test_spec_errors(configs):
    _preset(configs, "bad1", "mqar:\n  layers: [attention]\n  sweeps: {d_model: [8]}\n")
    with pytest.raises(ConfigError, match="unknown key 'sweeps'.*Did you mean 'sweep'"):
        load_spec("bad1")
    _preset(configs, "bad2", "mqar:\n  layers: [attention]\n  expect: {mamba: 0.5}\n")
    with pytest.raises(ConfigError, match="layer 'mamba' is not among this task's layers"):
        load_spec("bad2")
    _preset(configs, "bad3", "mqar:\n  layers: [attention]\n  published: {values: {attention: 99}}\n")
    with pytest.raises(ConfigError, match="'source'"):
        load_spec("bad3")
    _preset(configs, "bad4", "mqar:\n  layers: [atention]\n")
    with pytest.raises(ConfigError, match="atention"):
        load_spec("bad4")
    _preset(configs, "ok", "mqar:\n  layers: {attention: {lr: 0.01}}\n")
    with pytest.raises(ConfigError, match="runs no task 'listops'; its tasks: mqar"):
        plan_suite("ok", tasks=["listops"])
    (cell,) = plan_suite("ok")
    assert cell.config.lr == 0.01 and cell.variant == "" and cell.name == "mqar/attention"
    (cell,) = plan_suite("ok", overrides=["lr=0.5"])  # the command line wins over the preset's tuning
    assert cell.config.lr == 0.5
    # options for one sweep point: after the layer's own and the sweep's value
    _preset(configs, "points", "mqar:\n  sweep: {d_model: [8, 16]}\n  layers:\n"
                               "    attention: {lr: 0.01, steps: 5, 'd_model=16': {lr: 0.02}}\n    s4d: {}\n")
    got = {(c.layer, c.variant): (c.config.d_model, c.config.lr, c.config.steps) for c in plan_suite("points")}
    assert got[("attention", "d_model=8")] == (8, 0.01, 5)
    assert got[("attention", "d_model=16")] == (16, 0.02, 5)
    assert got[("s4d", "d_model=16")][1:] == got[("s4d", "d_model=8")][1:] != (0.02, 5)  # another layer's own
    _preset(configs, "badpoint", "mqar:\n  sweep: {d_model: [8, 16]}\n  layers:\n    attention: {'d_model=32': {lr: 0.02}}\n")
    with pytest.raises(ConfigError, match="'d_model=32' is not a point of this task's sweep \\(d_model=8, d_model=16\\)"):
        load_spec("badpoint")


def test_eval_lengths(data_root):
    cfg = compose("induction_heads", "s4d", preset="quick", overrides=[
        *TINY, "task.seq_len=16", "task.test_seq_len=16", "eval_lengths=[32, 64]"])
    r = train(cfg, None, data_root=data_root, progress=False, log=lambda *a: None)
    assert set(r["test_at_length"]) == {"32", "64"}
    for ev in r["test_at_length"].values():
        assert ev["n"] == 8 and 0 <= ev["value"] <= 1
    ds = length_test_split(resolve(cfg), 64, data_root)  # what was scored at "64": sequences of 64 tokens
    assert ds.info.seq_len == 64 and len(ds) == 8 and ds[0][0].shape == (64,)
    assert columns_of(r, "") == {"1x": r["value"], "2x": r["test_at_length"]["32"]["value"],
                                 "4x": r["test_at_length"]["64"]["value"]}
    with pytest.raises(ConfigError, match="task 'listops' has no test_seq_len option; the tasks that have one:.*"
                                          "induction_heads"):
        compose("listops", "s4d", preset="quick", overrides=["eval_lengths=[64]"])
    with pytest.raises(ConfigError, match="eval_lengths must be a list of positive ints"):
        compose("induction_heads", "s4d", preset="quick", overrides=["eval_lengths=[0]"])


def test_tiny_findings_preset_end_to_end(configs, data_root, tmp_path):
    _preset(configs, "tiny", """
induction_heads:
  title: Tiny induction
  layers: {s4d: {}, attention: {lr: 0.01}}
  published: {source: "a paper, Table 9", values: {attention: {1x: 100.0, 2x: 55.5}}}
  expect: {s4d: {1x: 0.0}, attention: {2x: 1.01}}
mqar:
  title: Tiny MQAR
  sweep: {d_model: [8, 16]}
  layers: [attention]
  expect: {attention: {d_model=8: 0.0, d_model=16: 0.0}}
""", defaults="""
task_options: {}
steps: 4
log_every: 2
eval_every: 2
batch_size: 8
train_size: 32
val_size: 8
test_size: 8
n_layers: 1
d_model: 16
""")
    (configs / "presets" / "tiny" / "induction_heads.yaml").write_text(
        "task_options: {seq_len: 16, test_seq_len: 16, vocab_size: 8}\neval_lengths: [32]\n")
    (configs / "presets" / "tiny" / "mqar.yaml").write_text(
        "task_options: {vocab_size: 32, seq_len: 32, n_kv: 2, test_seq_len: 32, test_n_kv: 2}\n")
    out = tmp_path / "out"
    s = run_suite("tiny", out, jobs=1, data_root=data_root, progress=False, log=lambda *a: None)
    names = [(r["task"], r["layer"], r["variant"]) for r in s.results]
    assert names == [("induction_heads", "s4d", ""), ("induction_heads", "attention", ""),
                     ("mqar", "attention", "d_model=8"), ("mqar", "attention", "d_model=16")]
    assert [r["config"]["d_model"] for r in s.results[2:]] == [8, 16]
    assert (out / "runs" / "mqar" / "attention" / "d_model=8" / "result.json").is_file()
    md = (out / "results.md").read_text()
    assert "## Tiny induction" in md and "## Tiny MQAR" in md and "a paper, Table 9" in md
    attn = next(r for r in s.results if r["layer"] == "attention" and r["task"] == "induction_heads")
    assert f"{100 * attn['value']:.1f} / 100.0" in md and f"{100 * attn['test_at_length']['32']['value']:.1f} / 55.5" in md
    assert "✗ ≥ 101 at 2x" in md and "✓ ≥ 0 at 1x" in md  # an expectation that cannot hold, and one that must
    summary = json.loads((out / "summary.json").read_text())
    held = {(c["task"], c["layer"], c["column"]): c["held"] for c in summary["findings"]}
    assert held == {("induction_heads", "s4d", "1x"): True, ("induction_heads", "attention", "2x"): False,
                    ("mqar", "attention", "d_model=8"): True, ("mqar", "attention", "d_model=16"): True}
    pytest.importorskip("matplotlib")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the report and the checks are pure functions of the results
    assert findings_report(s.results, load_spec("tiny")) in md
    assert finding_checks(s.results, load_spec("tiny")) == summary["findings"]
    # seeded: a second run (two worker processes this time) gives the same numbers
    again = run_suite("tiny", tmp_path / "again", jobs=2, data_root=data_root, progress=False, log=lambda *a: None)

    def numbers(results):
        return [(r["task"], r["layer"], r["variant"], r["value"], r["val"]["loss"],
                 {n: v["value"] for n, v in r.get("test_at_length", {}).items()},
                 [h["loss"] for h in r["history"]]) for r in results]

    assert numbers(again.results) == numbers(s.results)
