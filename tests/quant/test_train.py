"""Data sets, config building and the training CLI of seqzoo.quant.train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqzoo.config import ConfigError
from seqzoo.quant import Tokenizer
from seqzoo.quant.train import _signals, app, build_config, make_dataset, train_tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tokenizer"


@pytest.fixture
def one_thread():
    """Small training runs are faster on one thread, and much faster on a shared machine
    where a second intra-op thread waits for a busy core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_waves_dataset_is_deterministic_and_shaped():
    a, b = make_dataset("waves", "test"), make_dataset("waves", "test")
    assert torch.equal(a.tensors[0], b.tensors[0])
    assert a.tensors[0].shape == (512, 256, 2)
    assert not torch.equal(make_dataset("waves", "train").tensors[0][:512], a.tensors[0])
    with pytest.raises(ValueError, match="valid: digits, digits32, digits8, waves"):
        make_dataset("mnist")
    with pytest.raises(ValueError, match="split"):
        make_dataset("waves", "val")


def test_digits_dataset_split():
    pytest.importorskip("sklearn")
    tr, te = _signals(make_dataset("digits", "train")), _signals(make_dataset("digits", "test"))
    assert tr.shape == (1437, 256, 1) and te.shape == (360, 256, 1)
    assert 0.0 <= float(tr.min()) and float(tr.max()) <= 1.0
    assert _signals(make_dataset("digits8", "test")).shape == (360, 64, 1)
    # no image in both splits
    assert not (torch.cdist(tr.flatten(1), te.flatten(1)).min(1).values == 0).any()


def test_build_config_precedence(tmp_path):
    cfg = build_config(config=CONFIGS / "vq_rotation.yaml")
    assert cfg.quantizer == "vq" and cfg.rotation_trick and cfg.codebook_size == 512
    cfg = build_config("vq", config=CONFIGS / "vq_rotation.yaml", codebook_size=64, downsample=None)
    assert not cfg.rotation_trick and cfg.codebook_size == 64 and cfg.downsample == 4
    assert build_config(config=CONFIGS / "fsq.yaml").levels == (8, 8, 8)
    cfg = build_config(config=CONFIGS / "gumbel.yaml")
    assert cfg.quantizer == "gumbel" and not cfg.gumbel_hard and cfg.tau_min == 0.0625
    assert build_config(config=CONFIGS / "gumbel_hard.yaml").gumbel_hard
    cfg = build_config("gumbel-hard", config=CONFIGS / "gumbel.yaml", tau_anneal_steps=50)
    assert cfg.gumbel_hard and cfg.tau_anneal_steps == 50 and cfg.kl_weight == 0.01
    with pytest.raises(ConfigError, match="'fsq', 'vq', 'vq-rotation', 'gumbel', 'gumbel-hard'"):
        build_config("lfq")
    bad = tmp_path / "bad.yaml"
    bad.write_text("quantizer: vq\ncodebok_size: 3\n")
    with pytest.raises(ConfigError, match="codebook_size"):
        build_config(config=bad)


def test_short_training_beats_the_mean_predictor(one_thread):
    cfg = build_config("fsq", levels=(5, 5, 5), width=16, downsample=2, d_input=2)
    _, s = train_tokenizer(cfg, "waves", steps=60, batch_size=16, lr=3e-3, log=lambda *_: None)
    t = s["test"]
    assert t["recon_mse"] < 0.5 * t["mean_mse"], t
    assert 0 < t["usage"] <= 1 and t["perplexity"] > 1


def test_cli_train_then_evaluate(tmp_path, one_thread):
    runner = CliRunner()
    out = tmp_path / "tok"
    res = runner.invoke(app, ["train", "--quantizer", "vq-rotation", "--data", "waves", "--steps", "4",
                              "--batch-size", "4", "--width", "8", "--codebook-size", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and "usage" in summary["test"] and "recon_mse" in summary["test"]
    tok = Tokenizer.load(out)
    assert tok.config.rotation_trick and tok.vocab_size == 16 and tok.config.d_input == 2
    res = runner.invoke(app, ["evaluate", str(out), "--data", "waves"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["vocab_size"] == 16
    res = runner.invoke(app, ["train", "--quantizer", "lfq"])
    assert res.exit_code != 0 and "fsq" in res.output


@pytest.mark.parametrize("quantizer", ["gumbel", "gumbel-hard"])
def test_seqzoo_cli_trains_a_gumbel_tokenizer(tmp_path, one_thread, quantizer):
    from seqzoo.cli import app as seqzoo_app

    out = tmp_path / "tok"
    res = CliRunner().invoke(seqzoo_app, ["tokenizer", "train", "--quantizer", quantizer, "--data", "waves",
                                          "--steps", "4", "--batch-size", "4", "--width", "8", "--codebook-size",
                                          "16", "--tau-anneal-steps", "2", "--kl-weight", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    tok = Tokenizer.load(out)
    assert tok.config.quantizer == "gumbel" and tok.config.gumbel_hard == (quantizer == "gumbel-hard")
    assert tok.config.kl_weight == 0.5 and int(tok.quantizer.step) == 4
    assert float(tok.quantizer.temperature()) == pytest.approx(1 / 16)  # at the floor after 2 steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["history"][-1]["tau"] == pytest.approx(1 / 16) and summary["ms_per_step"] > 0


def test_compare_writes_one_table_of_all_five(tmp_path, one_thread):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", "--data", "waves", "--steps", "3", "--batch-size", "4", "--width", "8",
                                   "--codebook-size", "16", "--levels", "4,4", "--downsample", "8",
                                   "--tau-anneal-steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "quantizer" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == ["fsq", "vq", "vq-rotation", "gumbel", "gumbel-hard"]
    assert "ms / step" in table and "tau 1 -> 0.0625 over 2 steps" in table
    for q in ("fsq", "gumbel-hard"):
        assert Tokenizer.load(out / q).vocab_size == 16
    res = CliRunner().invoke(app, ["compare", "--quantizers", "vq,lfq", "--out", str(out)])
    assert res.exit_code != 0 and "lfq" in res.output
    res = CliRunner().invoke(app, ["compare", "--data", "waves", "--downstream", "s4d", "--out", str(out)])
    assert res.exit_code != 0 and "labelled seqzoo task" in res.output
    res = CliRunner().invoke(app, ["compare", "--data", "waves", "--data-option", "pool=2", "--out", str(out)])
    assert res.exit_code != 0 and "--data-option: data set 'waves' takes no size" in res.output


def test_compare_downstream_trains_a_model_through_each_tokenizer(tmp_path, one_thread, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("SEQZOO_DATA", str(tmp_path / "data"))
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", "--data", "image", "--data-option", "pool=4", "--quantizers",
                                   "fsq,gumbel-hard", "--steps", "2", "--batch-size", "4", "--width", "8",
                                   "--codebook-size", "16", "--levels", "4,4", "--downsample", "4",
                                   "--downstream", "s4d", "--downstream-steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = (out / "table.md").read_text()
    assert "data=image pool=4 steps=2" in table
    assert "s4d: test accuracy" in table and "raw signals (L=64)" in table
    for q in ("fsq", "gumbel-hard"):
        assert json.loads((out / q / "summary.json").read_text())["test"]["tokens_per_signal"] == 16  # 8x8 / 4
        result = json.loads((out / "downstream" / q / "result.json").read_text())
        assert result["tokenizer"] == str(out / q) and result["steps"] == 2
        assert result["config"]["task_options"] == {"pool": 4} and result["seq_len"]["train"] == 64
    assert json.loads((out / "downstream" / "raw" / "result.json").read_text())["tokenizer"] is None


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", ["fsq", "vq", "vq-rotation", "gumbel", "gumbel-hard"])
def test_cli_tokenizer_on_digits_clearly_beats_mean_predictor(tmp_path, quantizer):
    """A few minutes per quantiser on 1 thread: reconstruction well below both the mean and
    the per-pixel-mean predictor, with usage reported."""
    pytest.importorskip("sklearn")
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--quantizer", quantizer, "--data", "digits", "--steps", "1500",
                              "--threads", "1", "--out", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "tok" / "summary.json").read_text())["test"]
    assert t["recon_mse"] < 0.25 * t["mean_mse"], t
    assert t["recon_mse"] < 0.5 * t["position_mse"], t
    assert 0 < t["usage"] <= 1
