"""A task fed through a trained VQ/FSQ tokenizer instead of raw inputs (tiny data), and
seqzoo.quant's make_dataset reading seqzoo.tasks."""

from __future__ import annotations

import pytest
import torch

from seqzoo.config import ConfigError
from seqzoo.quant import Tokenizer, TokenizerConfig
from seqzoo.quant.train import _signals, make_dataset, train_tokenizer
from seqzoo.train import checkpoint as ckpt
from seqzoo.train import compose, resolve, train
from seqzoo.train.loop import build_run_model

pytest.importorskip("sklearn")


def test_make_dataset_routes_task_names(data_root):
    ds = make_dataset("image", "val", pool=4)
    x = _signals(ds)
    assert x.shape == (179, 64, 1) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert _signals(make_dataset("adding", "test", size=5, seq_len=32, test_seq_len=40)).shape == (5, 40, 2)
    with pytest.raises(ValueError, match="or a real-valued task: adding, image, pathfinder, pathx, shapes"):
        make_dataset("listops")  # token inputs: no tokenizer needed
    with pytest.raises(ValueError, match="takes no size, root or options"):
        make_dataset("waves", size=3)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, data_root):
    cfg = TokenizerConfig(d_input=1, quantizer="fsq", levels=(4, 4), downsample=4, width=8)
    out = tmp_path_factory.mktemp("tok")
    tok, summary = train_tokenizer(cfg, "image", steps=3, batch_size=16, out=out, log=lambda *a: None,
                                   data_options={"pool": 4, "root": data_root})
    assert summary["test"]["vocab_size"] == 16
    return out


def test_a_task_through_the_tokenizer(tokenizer_dir, tmp_path, data_root):
    overrides = ["steps=20", "log_every=10", f"tokenizer={tokenizer_dir}"]
    plan = resolve(compose("image", "s4d", preset="quick", overrides=overrides))
    assert plan.model_options["vocab_size"] == 16 and "d_input" not in plan.model_options
    model = build_run_model(plan)
    assert model.frontend is not None and model.encoder.num_embeddings == 16
    x = torch.rand(2, 64, 1) * 2 - 1
    ids = model.frontend(x)
    assert ids.shape == (2, 16) and ids.dtype == torch.int64  # 64 pixels -> 16 tokens

    result = train(plan, tmp_path / "tok-run", progress=False, log=lambda *a: None, data_root=data_root)
    assert result["tokenizer"] == str(tokenizer_dir) and result["steps"] == 20
    losses = [h["loss"] for h in result["history"]]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    # the front end stayed frozen: the checkpoint holds the tokenizer's own weights
    trained = build_run_model(plan)
    ckpt.load(ckpt.latest(tmp_path / "tok-run"), trained)
    tok = Tokenizer.load(tokenizer_dir)
    for name, t in tok.state_dict().items():
        assert torch.equal(trained.frontend.tokenizer.state_dict()[name], t), name
    # the frozen weights are not counted as trainable parameters
    raw = train(resolve(compose("image", "s4d", preset="quick", overrides=["steps=2"])), None, progress=False,
                log=lambda *a: None, data_root=data_root)
    assert result["params"] < raw["params"] + 16 * 32  # embedding of 16 ids instead of a linear encoder


def test_tokenizer_config_errors(tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="already has token inputs"):
        compose("listops", "s4d", preset="quick", overrides=[f"tokenizer={tokenizer_dir}"])
    two = tmp_path / "tok2"
    Tokenizer(TokenizerConfig(d_input=2, quantizer="fsq", levels=(4, 4), width=8)).save(two)
    with pytest.raises(ConfigError, match="takes signals of 2 channel\\(s\\), task 'image' has 1"):
        compose("image", "s4d", preset="quick", overrides=[f"tokenizer={two}"])
