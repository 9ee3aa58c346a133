"""seqzoo.build_model: a backbone around every registered causal layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import seqzoo
from seqzoo.config import ConfigError
from tests.helpers import rel_err


def _causal_layers():
    return [n for n in seqzoo.list_layers() if seqzoo.build(n, d_model=16).can_step()]


@pytest.mark.parametrize("layer", _causal_layers())
def test_lm_step_equals_forward(layer):
    torch.manual_seed(0)
    model = seqzoo.build_model(layer, d_model=16, n_layers=2, vocab_size=11, head="lm").double().eval()
    tokens = torch.randint(0, 11, (2, 19))
    logits, _ = model(tokens)
    assert logits.shape == (2, 19, 11)
    state, outs = None, []
    for t in range(19):
        out, state = model.step(tokens[:, t], state)
        outs.append(out)
    assert rel_err(torch.stack(outs, 1), logits) < 1e-9
    # prefill + continue == one forward
    _, s = model(tokens[:, :7], return_state=True)
    cont, _ = model(tokens[:, 7:], s)
    assert rel_err(cont, logits[:, 7:]) < 1e-9


def test_classifier_with_lengths_ignores_padding():
    torch.manual_seed(0)
    model = seqzoo.build_model("s4d", d_model=16, n_layers=2, vocab_size=7, n_classes=3, pool="mean").double().eval()
    x = torch.randint(1, 7, (2, 20))
    lengths = torch.tensor([20, 9])
    logits, _ = model(x, lengths=lengths)
    padded = x.clone()
    padded[1, 9:] = 0
    logits_pad, _ = model(padded, lengths=lengths)
    alone, _ = model(x[1:, :9])
    assert logits.shape == (2, 3)
    assert rel_err(logits_pad, logits) < 1e-12
    assert rel_err(logits[1:], alone) < 1e-9


def test_real_inputs_pair_and_backward():
    torch.manual_seed(0)
    model = seqzoo.build_model("attention", d_model=16, n_layers=1, d_input=3, n_classes=2, pair=True)
    a, b = torch.randn(4, 12, 3), torch.randn(4, 9, 3)
    logits, _ = model((a, b))
    assert logits.shape == (4, 2)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_frontend_hook_and_downsampled_lengths():
    class Quantise(nn.Module):
        downsample = 2
        vocab_size = 5

        def forward(self, x):  # (B, L, 1) -> ids (B, L/2)
            return (x[:, ::2, 0].clamp(0, 0.999) * 5).long()

    model = seqzoo.build_model("s4d", d_model=8, n_layers=1, vocab_size=5, n_classes=2, frontend=Quantise())
    x = torch.rand(3, 10, 1)
    logits, _ = model(x, lengths=torch.tensor([10, 5, 1]))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_bad_model_configs():
    with pytest.raises(ConfigError, match="unknown layer 'mambaa'"):
        seqzoo.build_model("mambaa", vocab_size=3, n_classes=2)
    with pytest.raises(ConfigError, match="exactly one of vocab_size"):
        seqzoo.build_model("s4d", n_classes=2)
    with pytest.raises(ConfigError, match="n_classes"):
        seqzoo.build_model("s4d", vocab_size=3)
    with pytest.raises(ConfigError, match="unknown option 'n_layer'.*n_layers"):
        seqzoo.build_model("s4d", vocab_size=3, n_classes=2, n_layer=2)
    with pytest.raises(ConfigError, match="layer 's4d': unknown option 'bogus'"):
        seqzoo.build_model("s4d", vocab_size=3, n_classes=2, layer_options={"bogus": 1})
    for bad in ({"vocab_size": 0, "n_classes": 2}, {"vocab_size": -1, "n_classes": 2}, {"d_input": 0, "n_classes": 2},
                {"vocab_size": 3, "n_classes": -2}):
        name = next(k for k, v in bad.items() if v < 1)
        with pytest.raises(ConfigError, match=f"{name} must be a positive int"):
            seqzoo.build_model("s4d", **bad)
    with pytest.raises(ConfigError, match="dropout"):
        seqzoo.build_model("s4d", vocab_size=3, n_classes=2, dropout=1.5)
    model = seqzoo.build_model("s4d", d_model=8, vocab_size=3, n_classes=2)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 3\)"):
        model(torch.tensor([[0, 1, 5]]))
    with pytest.raises(ValueError, match="integer dtype"):
        model(torch.rand(1, 4))
    with pytest.raises(NotImplementedError, match="classifier"):
        model.step(torch.tensor([1]))


@pytest.mark.parametrize("pool", ["mean", "max", "last"])
def test_empty_inputs(pool):
    """L = 0: an LM returns (B, 0, V) logits; a classifier pools an empty row to zeros
    (finite logits, the head's bias), never NaN or -inf."""
    lm = seqzoo.build_model("s4d", d_model=8, vocab_size=5, head="lm")
    logits, _ = lm(torch.zeros(2, 0, dtype=torch.long))
    assert logits.shape == (2, 0, 5)
    clf = seqzoo.build_model("s4d", d_model=8, vocab_size=5, n_classes=3, pool=pool)
    logits, _ = clf(torch.zeros(2, 0, dtype=torch.long))
    assert torch.allclose(logits, clf.head.bias.expand(2, 3))
    logits, _ = clf(torch.ones(2, 4, dtype=torch.long), lengths=torch.tensor([4, 0]))
    assert torch.allclose(logits[1], clf.head.bias) and not torch.allclose(logits[0], clf.head.bias)
