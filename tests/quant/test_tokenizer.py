"""Tokenizer: shapes, padding, save/load, and use as a build_model front end."""

from __future__ import annotations

import json

import pytest
import torch

import seqzoo
from seqzoo.config import ConfigError
from seqzoo.quant import Tokenizer, TokenizerConfig

SMALL = {"width": 16, "n_res": 1}


@pytest.mark.parametrize("quantizer", ["fsq", "vq", "gumbel"])
@pytest.mark.parametrize("downsample,L", [(1, 9), (2, 10), (3, 11), (4, 64), (6, 50)])
def test_shapes_and_lengths(quantizer, downsample, L):
    tok = Tokenizer(quantizer=quantizer, downsample=downsample, d_input=2, codebook_size=32,
                    levels=(5, 4), **SMALL)
    x = torch.randn(3, L, 2)
    recon, info = tok(x)
    assert recon.shape == x.shape
    Lp = -(-L // downsample)
    assert info["ids"].shape == (3, Lp)
    ids = tok.encode(x)
    assert ids.shape == (3, Lp) and ids.dtype == torch.long
    assert int(ids.max()) < tok.vocab_size
    assert tok.decode(ids).shape == (3, Lp * downsample, 2)
    assert tok.decode(ids, length=L).shape == x.shape


@pytest.mark.parametrize("quantizer", ["fsq", "vq", "gumbel"])
def test_forward_reconstruction_is_decode_of_encode_in_eval(quantizer):
    tok = Tokenizer(quantizer=quantizer, downsample=4, codebook_size=64, **SMALL)
    x = 3 + 2 * torch.randn(2, 40, 1)
    tok.fit_normalizer(x)
    assert abs(float(tok.input_mean) - float(x.mean())) < 1e-5
    tok.train()(x)  # k-means init etc.
    tok.eval()
    recon, info = tok(x)
    assert torch.equal(info["ids"], tok.encode(x))
    assert torch.allclose(recon, tok.decode(tok.encode(x), length=40), atol=1e-5)
    # the loss is the MSE on the standardised scale
    std = (x - tok.input_mean) / tok.input_std
    expect = ((recon - x) / tok.input_std).pow(2).mean()
    assert torch.allclose(info["recon_mse"], expect, rtol=1e-4)
    assert std.shape == x.shape


def test_padding_is_ignored():
    tok = Tokenizer(quantizer="vq", downsample=2, codebook_size=16, **SMALL).train()
    x = torch.randn(2, 12, 1)
    lengths = torch.tensor([12, 7])
    tok(x, lengths)  # k-means init from real positions
    tok.eval()
    x2 = x.clone()
    x2[1, 7:] = 1e3
    a, ia = tok(x, lengths)
    b, ib = tok(x2, lengths)
    assert torch.equal(ia["loss"], ib["loss"])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1, :7], b[1, :7])


def test_save_load_round_trip(tmp_path):
    tok = Tokenizer(TokenizerConfig(quantizer="vq", codebook_size=32, downsample=2, codebook_dim=4, **SMALL))
    x = torch.randn(2, 16, 1)
    tok.fit_normalizer(x + 5)
    tok.train()(x)
    tok.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.safetensors").is_file()
    cfg = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert cfg["codebook_dim"] == 4 and cfg["quantizer"] == "vq"
    back = Tokenizer.load(tmp_path / "tok")
    assert back.config == tok.config
    assert torch.equal(back.encode(x), tok.encode(x))
    for k, v in tok.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError, match="Tokenizer.save"):
        Tokenizer.load(tmp_path / "nothing")


def test_fsq_save_load_keeps_levels(tmp_path):
    tok = Tokenizer(quantizer="fsq", levels=(7, 5, 4), **SMALL)
    back = Tokenizer.load(tok.save(tmp_path / "f"))
    assert back.config.levels == (7, 5, 4) and back.vocab_size == 140


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ConfigError, match="Valid options"):
        Tokenizer(codebooksize=3)
    with pytest.raises(ValueError, match=r"\(B, L, 1\) or \(B, L\)"):
        Tokenizer(**SMALL).encode(torch.randn(2, 3, 4))


@pytest.mark.parametrize("quantizer", ["fsq", "vq", "gumbel"])
def test_frontend_of_build_model_forward_and_backward(quantizer):
    tok = Tokenizer(quantizer=quantizer, downsample=4, codebook_size=64, levels=(4, 4, 4), **SMALL)
    tok.train()(torch.randn(4, 64, 1))  # k-means init
    front = tok.as_frontend()
    assert front.downsample == 4 and front.vocab_size == tok.vocab_size
    model = seqzoo.build_model("s4d", d_model=32, n_layers=1, vocab_size=tok.vocab_size, n_classes=10,
                               frontend=front)
    model.train()
    assert not front.training  # stays frozen
    codebook_before = {k: v.clone() for k, v in front.state_dict().items()}
    x = torch.randn(3, 64, 1)
    logits, _ = model(x, lengths=torch.tensor([64, 40, 9]))
    assert logits.shape == (3, 10)
    logits.logsumexp(-1).sum().backward()
    assert model.encoder.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in front.parameters())
    for k, v in front.state_dict().items():
        assert torch.equal(v, codebook_before[k]), k
    # ids come from the tokenizer (B, L) raw input works too
    assert torch.equal(front(x[..., 0]), tok.encode(x))
    # the frontend is a snapshot: training the original later does not change it
    assert front.tokenizer is not tok
