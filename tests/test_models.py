"""seqzoo.build_model: a backbone around every registered causal layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import seqzoo
from seqzoo.config import ConfigError
from tests.helpers import rel_err


def _causal_layers():
    return [n for n in seqzoo.list_layers() if seqzoo.build(n, d_model=16).can_step()]



def assert_recurrent_forms_match(model, tokens, logits):
    """The step loop, and a prefill continued from its state, equal one forward (float64)."""
    state, outs = None, []
    for t in range(tokens.shape[1]):
        out, state = model.step(tokens[:, t], state)
        outs.append(out)
    assert rel_err(torch.stack(outs, 1), logits) < 1e-9
    _, s = model(tokens[:, :7], return_state=True)
    cont, _ = model(tokens[:, 7:], s)
    assert rel_err(cont, logits[:, 7:]) < 1e-9


@pytest.mark.parametrize("layer", _causal_layers())
def test_lm_step_equals_forward(layer):
    torch.manual_seed(0)
    model = seqzoo.build_model(layer, d_model=16, n_layers=2, vocab_size=11, head="lm").double().eval()
    tokens = torch.randint(0, 11, (2, 19))
    logits, _ = model(tokens)
    assert logits.shape == (2, 19, 11)
    assert_recurrent_forms_match(model, tokens, logits)


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


@pytest.mark.parametrize("head", ["lm", "none"])
def test_positions_select_the_outputs(head):
    """positions= gives out[positions] (row-major) for the whole-sequence output, and its
    gradient is the masked loss's; bad masks and a classifier are refused clearly."""
    torch.manual_seed(0)
    model = seqzoo.build_model("s4d", d_model=8, n_layers=2, vocab_size=7, head=head).double()
    x = torch.randint(0, 7, (3, 10))
    mask = torch.rand(3, 10) < 0.3
    mask[1] = False  # a row with nothing selected
    full, _ = model(x)
    part, _ = model(x, positions=mask)
    assert part.shape == (int(mask.sum()), full.shape[-1])
    torch.testing.assert_close(part, full[mask])
    g_full = torch.autograd.grad(full[mask].square().sum(), list(model.parameters()), allow_unused=True)
    g_part = torch.autograd.grad(part.square().sum(), list(model.parameters()), allow_unused=True)
    for a, b in zip(g_full, g_part):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="bool mask"):
        model(x, positions=mask.long())
    with pytest.raises(ValueError, match="bool mask"):
        model(x, positions=mask[:, :5])
    clf = seqzoo.build_model("s4d", d_model=8, vocab_size=7, n_classes=3)
    with pytest.raises(ValueError, match="classifier"):
        clf(x, positions=mask)


# ---------------------------------------------------------------------------- block options
def _trained_stats(model, vocab, steps=3):
    """A few train-mode forwards, so BatchNorm's running statistics are not the identity."""
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randint(0, vocab, (4, 23), generator=g))
    return model.eval()


@pytest.mark.parametrize("layer", ["s4d", "s4", "rtf", "s5", "mamba"])
@pytest.mark.parametrize("prenorm, mlp_ratio", [(False, 0.0), (True, 0.0), (False, 2.0)])
def test_batchnorm_models_step_equals_forward_in_eval(layer, prenorm, mlp_ratio):
    """Pre- and post-norm BatchNorm models: in eval mode (running statistics) the unrolled
    step loop is the parallel forward, and prefill + continue is one forward."""
    torch.manual_seed(0)
    model = seqzoo.build_model(layer, d_model=16, n_layers=2, vocab_size=11, head="lm", norm="batchnorm",
                               prenorm=prenorm, mlp_ratio=mlp_ratio, dropout=0.1, tie_dropout=True).double()
    model = _trained_stats(model, 11)
    bn = model.blocks[0].norm1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert isinstance(model.norm_f, nn.Identity) is (not prenorm)  # S4's backbone: a final norm with pre-norm only
    tokens = torch.randint(0, 11, (2, 19))
    logits, _ = model(tokens)
    assert_recurrent_forms_match(model, tokens, logits)


def test_batchnorm_step_needs_eval_mode():
    model = seqzoo.build_model("s4d", d_model=8, vocab_size=5, head="lm", norm="batchnorm").train()
    with pytest.raises(RuntimeError, match=r"call model.eval\(\)"):
        model.step(torch.tensor([1, 2]))


def test_batchnorm_statistics_ignore_padding():
    """Train-mode BatchNorm takes its statistics over the real positions only: the same
    sequences padded with anything, to any length, give the same running statistics and the
    same outputs at real positions; the statistics equal a float64 mean/variance over the
    real positions, and with full lengths they are torch's BatchNorm1d."""
    from seqzoo.modules.batch_norm import SequenceBatchNorm

    torch.manual_seed(0)
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 6])
    real = torch.cat([x[b, :n] for b, n in enumerate(lengths.tolist())])  # (19, 4)
    padded = x.clone()
    for b, n in enumerate(lengths.tolist()):
        padded[b, n:] = 1e3 * torch.randn(9 - n, 4, dtype=torch.float64)
    longer = torch.cat([padded, torch.full((3, 5, 4), -7.0, dtype=torch.float64)], dim=1)
    outs, stats = [], []
    for inp in (x, padded, longer):
        bn = SequenceBatchNorm(4, momentum=0.3).double()
        y = bn(inp, lengths)
        outs.append(torch.cat([y[b, :n] for b, n in enumerate(lengths.tolist())]))
        stats.append((bn.running_mean.clone(), bn.running_var.clone()))
    for o, (m, v) in zip(outs[1:], stats[1:]):
        assert rel_err(o, outs[0]) < 1e-12 and rel_err(m, stats[0][0]) < 1e-12 and rel_err(v, stats[0][1]) < 1e-12
    mean, var = real.mean(0), real.var(0, unbiased=False)
    assert rel_err(outs[0], (real - mean) / torch.sqrt(var + 1e-5)) < 1e-12
    assert rel_err(stats[0][0], 0.3 * mean) < 1e-12
    assert rel_err(stats[0][1], 0.7 + 0.3 * real.var(0, unbiased=True)) < 1e-12
    ref, bn = nn.BatchNorm1d(4, momentum=0.3).double(), SequenceBatchNorm(4, momentum=0.3).double()
    assert rel_err(bn(x), ref(x.transpose(1, 2)).transpose(1, 2)) < 1e-12
    assert rel_err(bn.running_var, ref.running_var) < 1e-12 and rel_err(bn.running_mean, ref.running_mean) < 1e-12


def test_batchnorm_classifier_ignores_padding():
    """A post-norm BatchNorm classifier (S4's ListOps model) in train mode: padding changes
    neither the logits nor the running statistics."""
    torch.manual_seed(0)
    model = seqzoo.build_model("s4d", d_model=16, n_layers=2, vocab_size=7, n_classes=3, norm="batchnorm",
                               prenorm=False, mlp_ratio=0, layer_options={"bidirectional": True}).double()
    x = torch.randint(1, 7, (2, 20))
    lengths = torch.tensor([20, 9])
    padded = x.clone()
    padded[1, 9:] = 0
    results = []
    for inp in (x, padded):
        m = copy.deepcopy(model).train()
        logits, _ = m(inp, lengths=lengths)
        results.append((logits, m.blocks[1].norm1.running_var.clone()))
    assert rel_err(results[0][0], results[1][0]) < 1e-12 and rel_err(results[0][1], results[1][1]) < 1e-12


def test_tied_dropout():
    """tie_dropout: one mask per (sequence, channel), for the residual branch, the MLP and the
    mixer's own dropout modules; untied masks differ along the sequence."""
    from seqzoo.modules.tied_dropout import TiedDropout

    torch.manual_seed(0)
    drop = TiedDropout(0.5).train()
    y = drop(torch.ones(4, 50, 8))
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert (y == y[:, :1]).all()  # constant along the sequence
    assert 0 < (y[:, 0] == 0).float().mean() < 1
    assert torch.equal(drop.eval()(y), y)
    model = seqzoo.build_model("s4d", d_model=8, vocab_size=5, head="lm", dropout=0.3, tie_dropout=True,
                               layer_options={"dropout": 0.2})
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(isinstance(m, TiedDropout) for m in drops)
    assert {m.p for m in drops} == {0.2, 0.3}  # the mixer's own rate kept
    untied = seqzoo.build_model("s4d", d_model=8, vocab_size=5, head="lm", dropout=0.3)
    assert not any(isinstance(m, TiedDropout) for m in untied.modules())


def test_block_options_build_the_papers_blocks():
    """S4's block (post-norm BatchNorm, no MLP, no final norm) and S5's (pre-norm, no final
    norm) as build_model options; the default stays pre-norm LayerNorm with a gated MLP."""
    s4 = seqzoo.build_model("s4", d_model=16, n_layers=2, vocab_size=5, n_classes=2, norm="batchnorm",
                            prenorm=False, mlp_ratio=0, layer_options={"n_ssm": 1, "d_state": 4})
    assert all(b.mlp is None and b.norm2 is None and not b.prenorm for b in s4.blocks)
    assert isinstance(s4.norm_f, nn.Identity) and isinstance(s4.blocks[0].norm1, nn.BatchNorm1d)
    assert s4.blocks[0].mixer.log_A_real.shape[0] == 1  # A tied across the 16 channels
    s5 = seqzoo.build_model("s5", d_model=16, vocab_size=5, n_classes=2, norm="batchnorm", final_norm=False,
                            bn_momentum=0.05, mlp_ratio=0, layer_options={"output": "half_glu2", "d_state": 8})
    assert isinstance(s5.norm_f, nn.Identity) and s5.blocks[0].prenorm and s5.blocks[0].norm1.momentum == 0.05
    default = seqzoo.build_model("s4d", d_model=16, vocab_size=5, n_classes=2)
    assert isinstance(default.blocks[0].norm1, nn.LayerNorm) and default.blocks[0].mlp is not None
    assert isinstance(default.norm_f, nn.LayerNorm) and default.blocks[0].prenorm
    with pytest.raises(ConfigError, match="bn_momentum"):
        seqzoo.build_model("s4d", vocab_size=3, n_classes=2, bn_momentum=0.0)
    with pytest.raises(ConfigError, match="norm = 'batch' is not one of"):
        seqzoo.build_model("s4d", vocab_size=3, n_classes=2, norm="batch")
