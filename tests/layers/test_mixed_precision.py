"""The mixed-precision contract, generated from the registry like the equivalences: every
registered layer and test variant, under ``torch.autocast`` with bf16 and with fp16, on the
CPU and (marker ``cuda``) on a GPU.

- forward and backward run; outputs, states and gradients are finite;
- they stay close to the fp32 run of the same layer on the same input (tolerances below);
- the recurrent form under autocast stays close to the fp32 recurrent form;
- the SSM math does not run in half precision: its state is the fp32 state (layers whose
  state comes from the input without a projection get it exactly, see ``STATE_TOL``);
- module casts (``.to(torch.bfloat16)``, ``.half()``) leave the parameters a layer names in
  ``keep_fp32`` in fp32, bit for bit, and every parameter with an optimiser hint (the
  sensitive SSM parameters, STYLE.md §7) is among them; the cast layer still runs;
- fp16 training with ``torch.amp.GradScaler`` takes its steps. GradScaler cannot unscale
  complex gradients (``_amp_foreach_non_finite_check_and_unscale_`` has no complex kernel),
  so complex SSM parameters (S4's P, B, C; S5's B, C) are stored as real pairs: no layer
  has a complex parameter, and the test says so.

Tolerances (max |a - b| / max |b| against fp32; measured worst case at D = 32, L = 64 in
brackets): outputs and states bf16 2e-2 [9.6e-3], fp16 4e-3 [1.1e-3]; input gradients
bf16 1.5e-1 [7.2e-2, transnormer with a LayerNorm output], fp16 3e-2 [7.6e-3]. bf16 keeps
8 significant bits (ε = 3.9e-3) and fp16 11 (ε = 4.9e-4): outputs sit at 1-3 ε after the
projections around the SSM, gradients at up to ~20 ε where a normalisation divides by a
small variance.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import DEVICES, rel_err
from tests.layers.cases import CASES, inputs, make, state_err, step_loop

D_MP, L_MP = 32, 64
HALF = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]
OUT_TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3}
GRAD_TOL = {torch.bfloat16: 1.5e-1, torch.float16: 3e-2}


def _state_close(s, s32) -> float:
    """Relative error of the float fields; integer fields (positions, VQ codes) must agree
    except for VQ code assignments at near-ties (transformer_vq quantises in fp32, but its
    keys come from a bf16/fp16 projection): at most 2 entries, or 1 in 50, may differ."""
    assert type(s) is type(s32)
    errs = [0.0]
    for f, a, b in zip(s._fields, s, s32):
        assert a.shape == b.shape, f
        if a.is_floating_point() or a.is_complex():
            errs.append(rel_err(a, b))
        else:
            n_diff = int((a != b).sum())
            assert n_diff <= max(2, a.numel() // 50), f"state.{f}: {n_diff} of {a.numel()} differ"
    return max(errs)


def _run(layer, x, device, dtype=None):
    """Forward (+ backward of a fixed loss) in fp32, or under autocast with ``dtype``."""
    x = x.detach().clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        y, state = layer(x)
    # a loss whose gradient is not y itself; a sum, not a mean, so that fp16 gradients stay
    # above its underflow (6e-8) without a GradScaler
    w = torch.linspace(-1, 1, y.shape[-1], device=device)
    (y.float() * w).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    return y, state, x.grad, grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name, variant", CASES)
def test_autocast_close_to_fp32(name, variant, dtype, device):
    layer = make(name, variant, torch.float32, device, d_model=D_MP)  # eval: no dropout, no EMA updates
    x = inputs(torch.float32, length=L_MP, device=device, d_model=D_MP)
    y32, s32, gx32, g32 = _run(layer, x, device)
    y, s, gx, g = _run(layer, x, device, dtype)

    assert torch.isfinite(y).all(), "non-finite output under autocast"
    assert rel_err(y.float(), y32) < OUT_TOL[dtype]
    assert _state_close(s, s32) < OUT_TOL[dtype], "the final state under autocast is far from the fp32 state"
    assert torch.isfinite(gx).all() and rel_err(gx, gx32) < GRAD_TOL[dtype]
    assert g.keys() == g32.keys()
    for n, grad in g.items():
        assert torch.isfinite(grad).all(), f"{n}: non-finite gradient under autocast"
    for n, p in layer.named_parameters():
        assert p.dtype == torch.float32, f"autocast must not change parameter {n} ({p.dtype})"

    if layer.can_step():  # the recurrent form, a few tokens
        with torch.no_grad():
            x_steps = x[:, :6]
            y_rec32, s_rec32 = step_loop(layer, x_steps)
            with torch.autocast(device, dtype=dtype):
                y_rec, s_rec = step_loop(layer, x_steps)
        assert torch.isfinite(y_rec).all()
        assert rel_err(y_rec.float(), y_rec32) < OUT_TOL[dtype]
        assert _state_close(s_rec, s_rec32) < OUT_TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, variant", CASES)
def test_ssm_state_stays_fp32_under_autocast(name, variant, device):
    """Where the state is computed from the input with no projection in between (s4, s4d,
    s5, rtf: the SSM sees x itself), autocast must leave it exactly as in fp32, bit for bit
    up to fp32 rounding: a matmul of the SSM that autocast moved to bf16 shows here."""
    layer = make(name, variant, torch.float32, device, d_model=D_MP)
    if name not in ("s4", "s4d", "s5", "rtf") or not layer.can_step():
        pytest.skip("the state passes through a projection (or there is none)")
    x = inputs(torch.float32, length=L_MP, device=device, d_model=D_MP)
    with torch.no_grad():
        _, s32 = layer(x)
        with torch.autocast(device, dtype=torch.bfloat16):
            _, s = layer(x)
    for t in s:
        assert t.dtype in (torch.float32, torch.complex64, torch.long, torch.bool), t.dtype
    assert state_err(s, s32) < 1e-6


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name, variant", CASES)
def test_module_cast_keeps_sensitive_params_fp32(name, variant, dtype):
    layer = make(name, variant, torch.float32, d_model=D_MP)
    before = {n: t.detach().clone() for n, t in layer._fp32_tensors().items()}
    hinted = {n for n, p in layer.named_parameters() if getattr(p, "_optim", None)}
    assert hinted <= before.keys(), f"parameters with optimiser hints not kept in fp32: {sorted(hinted - before.keys())}"
    layer.to(dtype)
    kept = layer._fp32_tensors()
    for n, t in kept.items():
        assert t.dtype == torch.float32 and torch.equal(t, before[n]), f"{n} was rounded by the module cast"
    for n, p in layer.named_parameters():
        if n not in kept:
            assert p.dtype == dtype, f"{n}: {p.dtype}"
    x = inputs(torch.float32, length=L_MP, d_model=D_MP)
    y, _ = layer(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    y32, _ = make(name, variant, torch.float32, d_model=D_MP)(x)
    assert rel_err(y.float(), y32) < 3 * OUT_TOL[dtype]  # weights rounded too, not only activations


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, variant", CASES)
def test_fp16_training_with_grad_scaler(name, variant, device):
    layer = make(name, variant, torch.float32, device, d_model=D_MP).train()
    assert not any(p.is_complex() for p in layer.parameters()), "GradScaler cannot unscale complex gradients"
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device)
    x = inputs(torch.float32, length=L_MP, device=device, d_model=D_MP)
    target = torch.roll(x, 1, dims=1)
    start = {n: p.detach().clone() for n, p in layer.named_parameters()}
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.float16):
            y, _ = layer(x, return_state=False)
            loss = (y.float() - target).square().mean()
            if getattr(layer, "aux_loss", None) is not None:
                loss = loss + layer.aux_loss.float()
        assert torch.isfinite(loss)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() > 1.0, "GradScaler kept finding non-finite gradients"
    moved = [n for n, p in layer.named_parameters() if p.requires_grad and not torch.equal(p, start[n])]
    assert moved, "no optimiser step was taken"
    for n, p in layer.named_parameters():
        assert torch.isfinite(p).all() and p.dtype == torch.float32, n
