"""Options the papers' recipes need from the SSM layers: parameters tied across channels
(S4's ``n_ssm`` for s4 and s4d, RTF's ``num_a``) and S5's gated outputs."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from tests.helpers import rel_err

H = 8


def _copy_tied_into(tied, full, names):
    """Give the untied layer every shared parameter of the tied one (copy h mod S, as S4's
    repeat '(v t)' does, or row h // (H / S) for RTF's '(D R)'), and the same others."""
    with torch.no_grad():
        for name, p in full.named_parameters():
            src = dict(tied.named_parameters())[name]
            p.copy_(names[name](src) if name in names else src)


@pytest.mark.parametrize("layer, variant", [
    ("s4", {"d_state": 8, "n_ssm": 2}),
    ("s4", {"d_state": 8, "n_ssm": 1, "bidirectional": True}),
    ("s4d", {"init": "legs", "d_state": 8, "n_ssm": 2}),
    ("s4d", {"d_state": 8, "n_ssm": 1, "mode": "scan"}),
])
def test_n_ssm_ties_A_and_B_across_channels(layer, variant):
    """A layer with n_ssm = S is the untied layer whose channel h holds copy h mod S of the
    SSM parameters (Λ, P, B for S4; A for S4D): same outputs, S rows stored."""
    S = variant["n_ssm"]
    torch.manual_seed(0)
    tied = seqzoo.build(layer, d_model=H, **variant).double()
    full = seqzoo.build(layer, d_model=H, **{k: v for k, v in variant.items() if k != "n_ssm"}).double()
    shared = ("log_A_real", "A_imag", "P", "B") if layer == "s4" else ("log_A_real", "A_imag")
    for n in shared:  # S copies stored: P (r, S, M, 2), the others (S, M, ...)
        assert getattr(tied, n).shape[1 if n == "P" else 0] == S, n
    tile = {n: (lambda t, n=n: t.repeat(1, H // S, 1, 1) if n == "P" else
                t.repeat(H // S, *([1] * (t.dim() - 1)))) for n in shared}
    _copy_tied_into(tied, full, tile)
    x = torch.randn(2, 21, H, dtype=torch.float64)
    assert rel_err(tied(x)[0], full(x)[0]) < 1e-10
    # one gradient for a shared copy: every channel that uses it contributes
    tied(x)[0].square().sum().backward()
    assert tied.log_A_real.grad.shape[0] == S and torch.isfinite(tied.log_A_real.grad).all()


def test_num_a_ties_rtf_denominators():
    torch.manual_seed(0)
    for variant in ({"init": "montel", "d_state": 4, "l_max": 32, "num_a": 2},
                    {"init": "montel", "d_state": 4, "l_max": 32, "num_a": 4, "bidirectional": True}):
        tied = seqzoo.build("rtf", d_model=H, **variant).double()
        full = seqzoo.build("rtf", d_model=H, **{k: v for k, v in variant.items() if k != "num_a"}).double()
        dirs = 2 if variant.get("bidirectional") else 1
        assert tied.a.shape[0] == dirs * variant["num_a"] and tied.b.shape[0] == dirs * H
        rows = H // variant["num_a"]  # channels per denominator
        _copy_tied_into(tied, full, {"a": lambda t, rows=rows: t.repeat_interleave(rows, dim=0)})
        x = torch.randn(2, 21, H, dtype=torch.float64)
        assert rel_err(tied(x)[0], full(x)[0]) < 1e-10


@pytest.mark.parametrize("layer, option, value", [("s4", "n_ssm", 3), ("s4d", "n_ssm", 0), ("rtf", "num_a", 5)])
def test_tying_must_divide_the_width(layer, option, value):
    with pytest.raises(ValueError, match=f"{option}={value} must be a positive divisor of d_model=8"):
        seqzoo.build(layer, d_model=8, **{option: value})


def test_s5_half_glu_outputs():
    """S5's half_glu1: a * sigmoid(W a), half_glu2: y * sigmoid(W a), a = gelu(y) (dropout
    off): checked against the formulas on the layer's own SSMOutput."""
    from seqzoo.modules.ssm_block import SSMOutput

    torch.manual_seed(0)
    y = torch.randn(2, 5, 6, dtype=torch.float64)
    for kind in ("half_glu1", "half_glu2"):
        out = SSMOutput(6, 6, "gelu", kind).double()
        a = torch.nn.functional.gelu(y)
        gate = torch.sigmoid(a @ out.proj.weight.T + out.proj.bias)
        assert rel_err(out(y), (a if kind == "half_glu1" else y) * gate) < 1e-12
    with pytest.raises(ValueError, match="half_glu1.*needs as many SSM features"):
        SSMOutput(6, 4, "gelu", "half_glu1")
    layer = seqzoo.build("s5", d_model=6, d_state=4, output="half_glu2")
    assert layer.post.output == "half_glu2"


@pytest.mark.parametrize("name", ["s4", "s4d", "rtf", "s5"])
def test_ssm_output_stage_runs_on_contiguous_rows(name):
    """The SSM layers hand their output stage a (B, L, H) view of a (B, H, L) convolution;
    the stage makes it contiguous first, so the activation and its backward run the
    vectorised CPU path (a transposed view against a contiguous gradient took GELU's
    backward 12x longer). Same values either way; checked on the activation's input."""
    torch.manual_seed(0)
    layer = seqzoo.build(name, d_model=8, d_state=4)
    seen = []
    layer.post.activation.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    x = torch.randn(2, 16, 8, requires_grad=True)
    y, _ = layer(x)
    y.sum().backward()
    assert seen == [True]
    assert x.grad is not None and torch.isfinite(x.grad).all()
