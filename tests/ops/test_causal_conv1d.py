"""The compiled causal depthwise conv1d against its reference (seqzoo/ops/causal_conv1d/ref.py).

The comparisons run on every device in ``tests.helpers.DEVICES``: on CUDA (marker ``cuda``)
they test the extension's CUDA kernel, and skip without a GPU or without that kernel
(there is no CUDA kernel yet: on a GPU, ``auto`` runs the reference or the causal-conv1d package)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from seqzoo.ops import causal_conv1d, causal_conv1d_update
from seqzoo.ops.causal_conv1d import ref
from tests.helpers import DEVICES, compiled_backend, rel_err

cc_mod = importlib.import_module("seqzoo.ops.causal_conv1d")  # the module, not the function


def _inputs(B=2, D=5, L=23, W=4, *, bias=True, state=True, dtype=torch.float64, seed=0, requires_grad=True,
            device="cpu"):
    """Generated on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_(requires_grad)  # noqa: E731
    return r(B, D, L), r(D, W), r(D) if bias else None, r(B, D, W - 1) if state else None


def _run(fn, x, w, b, s, act, seed=3):
    out, final = fn(x, w, b, s, True, act)
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device)).sum()
    loss = loss + (final * torch.randn(final.shape, generator=g, dtype=final.dtype).to(out.device)).sum()
    inputs = [t for t in (x, w, b, s) if t is not None]
    return out, final, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("W", [1, 2, 4, 5])
@pytest.mark.parametrize("act", [None, "silu"])
@pytest.mark.parametrize("bias, state", [(True, True), (False, False), (True, False)])
def test_matches_reference(W, act, bias, state, device):
    backend = compiled_backend("causal_conv1d", device)
    x, w, b, s = _inputs(W=W, bias=bias, state=state, device=device)
    out, final, g = _run(lambda *a: causal_conv1d(*a, backend=backend), x, w, b, s, act)
    out_r, final_r, g_r = _run(ref.causal_conv1d, x, w, b, s, act)
    assert rel_err(out, out_r) < 1e-13 and final.shape == (2, 5, W - 1)
    assert rel_err(final, final_r) < 1e-15
    for got, want in zip(g, g_r):
        assert got.shape == want.shape and rel_err(got, want) < 1e-13


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [1, 2])
def test_sequence_shorter_than_the_state(L, device):
    """L < W - 1: the final state still holds part of the initial state."""
    backend = compiled_backend("causal_conv1d", device)
    x, w, b, s = _inputs(L=L, W=4, device=device)
    out, final, g = _run(lambda *a: causal_conv1d(*a, backend=backend), x, w, b, s, "silu")
    out_r, final_r, g_r = _run(ref.causal_conv1d, x, w, b, s, "silu")
    assert rel_err(out, out_r) < 1e-13 and torch.equal(final, final_r)
    assert torch.equal(final[..., : 3 - L], s[..., L:])
    for got, want in zip(g, g_r):
        assert rel_err(got, want) < 1e-13


def test_reference_equals_torch_conv1d():
    """The spec against PyTorch's own grouped conv with left padding (an independent check)."""
    x, w, b, s = _inputs(requires_grad=False)
    xp = torch.cat([s, x], dim=-1)
    want = F.conv1d(xp, w[:, None, :], b, groups=5)
    assert rel_err(ref.causal_conv1d(x, w, b, s), want) < 1e-14
    want0 = F.conv1d(x, w[:, None, :], b, groups=5, padding=3)[..., :23]
    assert rel_err(ref.causal_conv1d(x, w, b), want0) < 1e-14


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("update_backend", ["compiled", "ref"])
def test_update_steps_equal_the_full_convolution(update_backend, device):
    backend = compiled_backend("causal_conv1d", device)
    step_backend = backend if update_backend == "compiled" else "ref"
    x, w, b, s = _inputs(requires_grad=False, device=device)
    full, final = causal_conv1d(x, w, b, s, True, "silu", backend=backend)
    state = s
    outs = []
    for t in range(x.shape[-1]):
        before = state.clone()
        y, new_state = causal_conv1d_update(x[..., t], state, w, b, "silu", backend=step_backend)
        assert torch.equal(state, before), "update wrote into the state it was given"
        outs.append(y)
        state = new_state
    assert rel_err(torch.stack(outs, -1), full) < 1e-13
    assert torch.equal(state, final)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_and_noncontiguous(device):
    backend = compiled_backend("causal_conv1d", device)
    x, w, b, s = _inputs(D=16, L=200, requires_grad=False, device=device)
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # channel-last memory, as from a (B, L, D) projection
    assert not xt.is_contiguous()
    out = causal_conv1d(xt.float(), w.float(), b.float(), s.float(), activation="silu", backend=backend)
    assert out.dtype == torch.float32
    assert rel_err(out.double(), ref.causal_conv1d(x, w, b, s, activation="silu")) < 1e-6


def _projection_half(x):
    """x (B, D, L) as Mamba passes it: the transposed first half of a (B, L, 2D) projection
    (channels contiguous, stride 2D over L)."""
    with torch.no_grad():
        xz = torch.cat([x.transpose(1, 2), torch.zeros_like(x.transpose(1, 2))], dim=-1)
    v = xz[..., : x.shape[1]].transpose(1, 2).requires_grad_(x.requires_grad)
    assert v.stride(1) == 1 and v.stride(2) == 2 * x.shape[1]
    return v


def test_channel_last_input_without_copies():
    """A channel-last x is read through its strides and out, dx come back channel-last
    (Mamba's projections feed the conv and the conv's output feeds the next projection
    without transposed copies); values, final states and gradients equal the reference in
    float64, also with a channel-last gradient of out."""
    backend = compiled_backend("causal_conv1d", "cpu")
    x, w, b, s = _inputs(D=9, L=40)
    xc = _projection_half(x)
    out, final, grads = _run(lambda *a: causal_conv1d(*a, backend=backend), xc, w, b, s, "silu")
    out_r, final_r, grads_r = _run(ref.causal_conv1d, x, w, b, s, "silu")
    assert out.stride(1) == 1 and out.stride(2) == 9  # channels contiguous, as x
    assert rel_err(out, out_r) < 1e-12 and rel_err(final, final_r) < 1e-12
    for name, a, r in zip("xwbs", grads, grads_r):
        assert rel_err(a, r) < 1e-12, f"d{name}"
    xd, wd, bd, sd = (t.detach() for t in (xc, w, b, s))
    dout = torch.randn(2, 40, 9, dtype=torch.float64).transpose(1, 2)
    dx, dw, db, dinit = torch.ops.seqzoo.causal_conv1d_backward(dout, None, xd, wd, bd, sd, True)
    dx_r, dw_r, db_r, dinit_r = torch.ops.seqzoo.causal_conv1d_backward(
        dout.contiguous(), None, xd.contiguous(), wd, bd, sd, True)
    assert dx.stride(1) == 1 and dx_r.is_contiguous()
    for a, r in ((dx, dx_r), (dw, dw_r), (db, db_r), (dinit, dinit_r)):
        assert rel_err(a, r) < 1e-14


@pytest.mark.parametrize("W, act, state", [(4, "silu", True), (3, None, False), (1, "silu", True)])
def test_channel_blocks_match_rows(W, act, state):
    """Channels contiguous: the kernels run over blocks of 64 channels in the vector lanes
    (D = 70: one full block and one of 6). float64 values and gradients (with a gradient of
    the final states) equal the reference; in float32, out, final states, dx and the initial
    states' gradient are the same numbers as the row kernels' on the same values (the same
    arithmetic in the same order), dweight and dbias agree to rounding (sums in another order)."""
    backend = compiled_backend("causal_conv1d", "cpu")
    x, w, b, s = _inputs(B=3, D=70, L=37, W=W, state=state)
    xc = _projection_half(x)
    out, final, grads = _run(lambda *a: causal_conv1d(*a, backend=backend), xc, w, b, s, act)
    out_r, final_r, grads_r = _run(ref.causal_conv1d, x, w, b, s, act)
    assert out.stride(1) == 1
    assert rel_err(out, out_r) < 1e-12 and rel_err(final, final_r) < 1e-12
    for name, a, r in zip("xwbs", grads, grads_r):
        assert rel_err(a, r) < 1e-12, f"d{name}"
    silu = act == "silu"
    xf, wf, bf = (t.detach().float() for t in (x, w, b))
    sf = s.detach().float() if state else None
    g = torch.Generator().manual_seed(5)
    dout = torch.randn(3, 37, 70, generator=g).transpose(1, 2)  # channels contiguous
    dfinal = torch.randn(3, 70, W - 1, generator=g)
    xcf = _projection_half(xf)
    blocks = torch.ops.seqzoo.causal_conv1d(xcf, wf, bf, sf, silu)
    rows = torch.ops.seqzoo.causal_conv1d(xf.contiguous(), wf, bf, sf, silu)
    assert all(torch.equal(a, r) for a, r in zip(blocks, rows))
    gb = torch.ops.seqzoo.causal_conv1d_backward(dout, dfinal, xcf, wf, bf, sf, silu)
    gr = torch.ops.seqzoo.causal_conv1d_backward(dout.contiguous(), dfinal, xf.contiguous(), wf, bf, sf, silu)
    assert gb[0].stride(1) == 1 and torch.equal(gb[0], gr[0]) and torch.equal(gb[3], gr[3])  # dx, d initial
    assert rel_err(gb[1].double(), gr[1].double()) < 1e-5 and rel_err(gb[2].double(), gr[2].double()) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_and_opcheck(device):
    backend = compiled_backend("causal_conv1d", device)
    x, w, b, s = _inputs(B=1, D=3, L=6, W=3, device=device)
    assert torch.autograd.gradcheck(
        lambda *a: causal_conv1d(*a, return_final_states=True, activation="silu", backend=backend), (x, w, b, s)
    )
    for args in [(x, w, b, s, True), (x.float(), w.float(), None, None, False), (_projection_half(x), w, b, s, True)]:
        args = tuple(a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(torch.ops.seqzoo.causal_conv1d.default, args)
    xd, wd, bd, sd = (t.detach() for t in (x, w, b, s))
    out, final = torch.ops.seqzoo.causal_conv1d(xd, wd, bd, sd, True)
    torch.library.opcheck(
        torch.ops.seqzoo.causal_conv1d_backward.default,
        (torch.randn_like(out), torch.randn_like(final), xd, wd, bd, sd, True),
    )
    xcl = _projection_half(xd)  # channel-last x and gradient of out
    torch.library.opcheck(torch.ops.seqzoo.causal_conv1d_backward.default,
                          (torch.randn(1, 6, 3, dtype=xd.dtype).transpose(1, 2), None, xcl, wd, bd, sd, True))


def test_bad_inputs():
    x, w, b, s = _inputs(requires_grad=False)
    with pytest.raises(ValueError, match=r"weight must be \(D, W\)"):
        causal_conv1d(x, w[:3], b)
    with pytest.raises(ValueError, match=r"initial_states must be \(B, D, W-1\)"):
        causal_conv1d(x, w, b, s[..., :2])
    with pytest.raises(ValueError, match="activation must be one of"):
        causal_conv1d(x, w, b, activation="relu")
    with pytest.raises(ValueError, match=r"x must be \(B, D\)"):
        causal_conv1d_update(x, s, w, b)
    with pytest.raises(ValueError, match=r"conv_state must be \(B, D, W-1\)"):
        causal_conv1d_update(x[..., 0], s[..., :1], w, b)
