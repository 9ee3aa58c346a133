"""The compiled selective scan against its reference (seqzoo/ops/selective_scan/ref.py).

The comparisons run on every device in ``tests.helpers.DEVICES``: on CUDA (marker ``cuda``)
they test the extension's CUDA kernel, and skip without a GPU or without that kernel;
the dispatch tests stay on the CPU."""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from seqzoo import _ext
from seqzoo.ops import _dispatch, selective_scan
from seqzoo.ops.selective_scan import ref
from tests.helpers import DEVICES, compiled_backend, rel_err

# the module (seqzoo.ops.selective_scan the attribute is the function of the same name)
ss_mod = importlib.import_module("seqzoo.ops.selective_scan")

needs_ext = pytest.mark.skipif(not _ext.has_kernel("selective_scan", "cpu"), reason="seqzoo._C not built")

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _inputs(Bsz=2, D=6, L=37, N=5, *, groups=None, dtype=torch.float64, seed=0, with_D=True, with_z=True,
            with_bias=True, with_h0=True, requires_grad=True, device="cpu"):
    """Inputs in the ranges a Mamba layer produces: A < 0, Δ around softplus^-1(0.01..0.5).
    Generated on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    bc_shape = (Bsz, N, L) if groups is None else (Bsz, groups, N, L)
    t = dict(
        u=r(Bsz, D, L),
        delta=r(Bsz, D, L) * 0.5 - 1.0,
        A=-torch.rand(D, N, generator=g, dtype=torch.float64) * 2 - 0.1,
        B=r(*bc_shape),
        C=r(*bc_shape),
        D=r(D) if with_D else None,
        z=r(Bsz, D, L) if with_z else None,
        delta_bias=r(D) * 0.3 if with_bias else None,
        initial_state=r(Bsz, D, N) if with_h0 else None,
    )
    for k, v in t.items():
        if v is not None:
            t[k] = v.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    return t


def _run(fn, t, softplus, seed=5, final_weight=1.0):
    """Forward, then gradients of a loss touching every output and the final state."""
    out, final = fn(**t, delta_softplus=softplus, return_final_state=True)
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
    gf = torch.randn(final.shape, generator=g, dtype=torch.float64).to(final.device, final.dtype)
    loss = (out * go).sum() + final_weight * (final * gf).sum()
    inputs = [v for v in t.values() if v is not None]
    return out, final, torch.autograd.grad(loss, inputs)


def _compiled(device):
    """selective_scan on seqzoo's compiled kernel for ``device`` (skips the test without one)."""
    backend = compiled_backend("selective_scan", device)
    return lambda **kw: selective_scan(**kw, backend=backend)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "groups, with_D, with_z, with_bias, softplus, with_h0",
    list(itertools.product([None, 3], [True, False], [True, False], [True, False], [True, False], [True, False])),
)
def test_matches_reference_fwd_bwd(groups, with_D, with_z, with_bias, softplus, with_h0, device):
    fn = _compiled(device)
    t = _inputs(groups=groups, with_D=with_D, with_z=with_z, with_bias=with_bias, with_h0=with_h0, device=device)
    out, final, grads = _run(fn, t, softplus)
    out_r, final_r, grads_r = _run(ref.selective_scan, t, softplus)
    assert rel_err(out, out_r) < 1e-12
    assert rel_err(final, final_r) < 1e-12
    names = [k for k, v in t.items() if v is not None]
    for name, got, want in zip(names, grads, grads_r):
        assert got.shape == want.shape, name
        assert rel_err(got, want) < 1e-11, f"d{name}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("groups, D", [(None, 6), (2, 20), (None, 9)])
def test_rows_of_A_one_value(groups, D, device):
    """A (D, N) whose rows repeat one value (SSD's scalar decay per head: the CPU kernel then
    computes one exponential per step and channel): forward, final state and every gradient,
    including dA per entry. D = 20 in 2 groups and D = 9 leave partly filled lane blocks."""
    fn = _compiled(device)
    t = _inputs(groups=groups, D=D, N=7, L=70, device=device)
    with torch.no_grad():
        t["A"].copy_(t["A"][:, :1].expand_as(t["A"]))
    out, final, grads = _run(fn, t, True)
    out_r, final_r, grads_r = _run(ref.selective_scan, t, True)
    assert rel_err(out, out_r) < 1e-12 and rel_err(final, final_r) < 1e-12
    for name, got, want in zip([k for k, v in t.items() if v is not None], grads, grads_r):
        assert rel_err(got, want) < 1e-11, f"d{name}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L, N, chunk", [(1, 5, 64), (150, 19, 64), (40, 8, 7), (13, 1, 4), (64, 16, 64)])
def test_lengths_state_sizes_and_checkpoint_chunks(monkeypatch, L, N, chunk, device):
    """L = 1, L spanning several checkpoint chunks (also not a multiple of it), N not a
    multiple of the vector width (padded lanes), N = 1."""
    fn = _compiled(device)
    monkeypatch.setattr(ss_mod, "CHECKPOINT_CHUNK", chunk)
    t = _inputs(Bsz=2, D=3, L=L, N=N, seed=L, device=device)
    out, final, grads = _run(fn, t, True)
    out_r, final_r, grads_r = _run(ref.selective_scan, t, True)
    assert rel_err(out, out_r) < 1e-12 and rel_err(final, final_r) < 1e-12
    for name, got, want in zip(NAMES, grads, grads_r):
        assert rel_err(got, want) < 1e-11, f"d{name}"


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_through_final_state_only(device):
    """A loss on the final state alone: the op's backward gets no gradient for `out`."""
    fn = _compiled(device)
    t = _inputs(L=20, device=device)
    f = fn(**t, delta_softplus=True, return_final_state=True)[1]
    f_r = ref.selective_scan(**t, delta_softplus=True, return_final_state=True)[1]
    inputs = [v for v in t.values() if v is not None]
    g = torch.autograd.grad(f.square().sum(), inputs, allow_unused=True)
    g_r = torch.autograd.grad(f_r.square().sum(), inputs, allow_unused=True)
    for name, a, b in zip(NAMES, g, g_r):
        if b is None:  # D and z do not reach the state
            assert a is None or a.abs().max() == 0, name
        else:
            assert rel_err(a, b) < 1e-11, name


@pytest.mark.parametrize("device", DEVICES)
def test_empty_sequence(device):
    fn = _compiled(device)
    t = _inputs(L=0, requires_grad=False, device=device)
    out, final = fn(**t, return_final_state=True)
    assert out.shape == (2, 6, 0) and torch.equal(final, t["initial_state"])


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_inputs(device):
    """Views such as a Mamba layer passes: (B, L, D) tensors transposed to (B, D, L)."""
    fn = _compiled(device)
    t = _inputs(Bsz=2, D=8, L=33, N=4, groups=2, requires_grad=False, device=device)
    nc = {}
    for k, v in t.items():
        if v is not None and v.dim() >= 3:
            v = v.transpose(-1, -2).contiguous().transpose(-1, -2)
            assert not v.is_contiguous()
        elif v is not None and v.dim() == 2:
            v = v.t().contiguous().t()
        nc[k] = v
    nc["D"] = torch.stack([t["D"], t["D"]], 1)[:, 0]  # strided 1-D
    assert not nc["D"].is_contiguous()
    out, final = fn(**nc, delta_softplus=True, return_final_state=True)
    out_r, final_r = ref.selective_scan(**t, delta_softplus=True, return_final_state=True)
    assert rel_err(out, out_r) < 1e-12 and rel_err(final, final_r) < 1e-12


def _mamba_layout(t):
    """The views a Mamba layer passes: u rows contiguous (the conv's output), delta a
    transposed (B, L, D) tensor, z a transposed half of a (B, L, 2D) projection (stride 2D)."""
    Bsz, D, L = t["u"].shape
    with torch.no_grad():
        delta = t["delta"].transpose(1, 2).contiguous().transpose(1, 2)
        xz = torch.cat([t["z"].transpose(1, 2), t["z"].transpose(1, 2)], dim=-1)  # (B, L, 2D)
        z = xz[..., D:].transpose(1, 2)
    assert delta.stride(1) == 1 and z.stride(1) == 1 and z.stride(2) == 2 * D
    return dict(t, delta=delta.requires_grad_(), z=z.requires_grad_())


@needs_ext
@pytest.mark.parametrize("D", [8, 11])
def test_channel_last_views_without_copies(D):
    """Read through the strides (no copy), out in z's layout and each gradient in its input's
    layout, forward, final state and gradients equal to the reference in float64."""
    t = _mamba_layout(_inputs(Bsz=2, D=D, L=70, N=5))
    out, final, grads = _run(_compiled("cpu"), t, True)
    out_r, final_r, grads_r = _run(ref.selective_scan, t, True)
    assert out.stride(1) == 1 and out.stride(2) == D  # channels contiguous, as z
    assert rel_err(out, out_r) < 1e-12 and rel_err(final, final_r) < 1e-12
    for name, got, want in zip([k for k, v in t.items() if v is not None], grads, grads_r):
        assert rel_err(got, want) < 1e-11, f"d{name}"
    u, delta, A, B, C, Dk, z, bias, h0 = (t[k].detach() for k in NAMES)
    o, last, ckpt = torch.ops.seqzoo.selective_scan(u, delta, A, B.unsqueeze(1), C.unsqueeze(1), Dk, z, bias, h0, True, 64)
    dout = torch.randn(2, 70, D, dtype=torch.float64).transpose(1, 2)
    du, ddelta, *_, dz, _, _ = torch.ops.seqzoo.selective_scan_backward(
        dout, None, u, delta, A, B.unsqueeze(1), C.unsqueeze(1), Dk, z, bias, ckpt, True, 64)
    assert du.is_contiguous() and ddelta.stride(1) == 1 and dz.stride(1) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_float32_and_half_inputs(device):
    fn = _compiled(device)
    t64 = _inputs(Bsz=2, D=16, L=300, N=16, requires_grad=False, device=device)
    out_r = ref.selective_scan(**t64, delta_softplus=True)
    t32 = {k: None if v is None else v.float() for k, v in t64.items()}
    out = fn(**t32, delta_softplus=True)
    assert out.dtype == torch.float32 and rel_err(out.double(), out_r) < 1e-5
    # bf16 inputs are computed in fp32; the reference on the same rounded inputs agrees
    tb = {k: None if v is None else v.bfloat16() for k, v in t64.items()}
    out_b = fn(**tb, delta_softplus=True)
    want = ref.selective_scan(**{k: None if v is None else v.double() for k, v in tb.items()}, delta_softplus=True)
    assert out_b.dtype == torch.bfloat16 and rel_err(out_b.double(), want) < 1e-2


@pytest.mark.parametrize("device", DEVICES)
def test_float32_gradients(device):
    fn = _compiled(device)
    t = _inputs(Bsz=2, D=5, L=90, N=16, device=device)
    t32 = {k: None if v is None else v.detach().float().requires_grad_() for k, v in t.items()}
    _, _, g32 = _run(fn, t32, True)
    _, _, g64 = _run(ref.selective_scan, t, True)
    for name, a, b in zip(NAMES, g32, g64):
        assert rel_err(a.double(), b) < 1e-4, name


@pytest.mark.parametrize("device", DEVICES)
def test_padding_with_minus_inf_delta_leaves_state_unchanged(device):
    """What Mamba's `lengths` relies on: delta = -inf (softplus -> exactly 0) freezes the state."""
    fn = _compiled(device)
    for dtype in (torch.float64, torch.float32):
        t = _inputs(L=12, dtype=dtype, requires_grad=False, device=device)
        _, f_short = fn(**{**t, **_cut(t, 7)}, delta_softplus=True, return_final_state=True)
        t["delta"][..., 7:] = float("-inf")
        out, f = fn(**t, delta_softplus=True, return_final_state=True)
        assert torch.equal(f, f_short)
        assert torch.isfinite(out).all()


def _cut(t, n):
    return {k: v[..., :n] for k, v in t.items() if k in ("u", "delta", "z", "B", "C")}


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    scan = _compiled(device)
    t = _inputs(Bsz=1, D=2, L=6, N=3, groups=2, device=device)
    names = list(t)

    def fn(*args):
        out, final = scan(**dict(zip(names, args)), delta_softplus=True, return_final_state=True)
        return out, final

    # the CUDA backward sums dB and dC over a group's channels with atomicAdd, in no fixed
    # order: two backward passes may differ in the last bits
    nondet_tol = 1e-12 if device == "cuda" else 0.0
    assert torch.autograd.gradcheck(fn, tuple(t.values()), fast_mode=True, nondet_tol=nondet_tol)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    """The fake kernels, schema and autograd registration agree with the device's kernel."""
    compiled_backend("selective_scan", device)
    t = _inputs(Bsz=2, D=4, L=11, N=3, groups=2, requires_grad=False, device=device)
    u, delta, A, B, C, D, z, bias, h0 = t.values()
    cases = [
        (u, delta, A, B, C, D, z, bias, h0, True, 4),
        (u.float(), delta.float(), A.float(), B[:, :1].float(), C[:, :1].float(), None, None, None, None, False, 64),
        (u, delta, A, B, C, D, z, bias, h0, True, 0),  # inference: no checkpoints
    ]
    cl = _mamba_layout(_inputs(Bsz=2, D=4, L=11, N=3, groups=2, device=device))  # channel-last views
    cases.append(tuple(v.detach() for v in cl.values()) + (True, 4))
    for args in cases:
        grad = args[-1] > 0
        args = tuple(a.clone().requires_grad_(grad) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(torch.ops.seqzoo.selective_scan.default, args)
    out, last, ckpt = torch.ops.seqzoo.selective_scan(u, delta, A, B, C, D, z, bias, h0, True, 4)
    bwd_args = (torch.randn_like(out), torch.randn_like(last), u, delta, A, B, C, D, z, bias, ckpt, True, 4)
    torch.library.opcheck(torch.ops.seqzoo.selective_scan_backward.default, bwd_args)
    u, delta, A, B, C, D, z, bias, h0 = (v.detach() for v in cl.values())
    out, last, ckpt = torch.ops.seqzoo.selective_scan(u, delta, A, B, C, D, z, bias, h0, True, 4)
    bwd_args = (torch.randn_like(out), None, u, delta, A, B, C, D, z, bias, ckpt, True, 4)
    torch.library.opcheck(torch.ops.seqzoo.selective_scan_backward.default, bwd_args)


def test_reference_matches_the_paper_elementwise():
    """The spec itself, against a scalar loop over (b, d, t, n) written from Algorithm 2
    (grouped B/C: channel d reads group d // (D / G))."""
    t = _inputs(Bsz=2, D=4, L=5, N=3, groups=2, requires_grad=False)
    out, final = ref.selective_scan(**t, delta_softplus=True, return_final_state=True)
    u, delta, A, B, C, D, z, bias, h0 = t.values()
    want = torch.zeros_like(u)
    want_final = torch.zeros_like(h0)
    for b in range(2):
        for d in range(4):
            g = d // 2
            h = [h0[b, d, n].item() for n in range(3)]
            for s in range(5):
                dt = F.softplus(delta[b, d, s] + bias[d]).item()
                y = 0.0
                for n in range(3):
                    h[n] = math.exp(dt * A[d, n].item()) * h[n] + dt * B[b, g, n, s].item() * u[b, d, s].item()
                    y += C[b, g, n, s].item() * h[n]
                y += D[d].item() * u[b, d, s].item()
                want[b, d, s] = y * F.silu(z[b, d, s]).item()
            want_final[b, d] = torch.tensor(h, dtype=torch.float64)
    assert rel_err(out, want) < 1e-13 and rel_err(final, want_final) < 1e-13


# ---------------------------------------------------------------- dispatch and packages
@needs_ext
def test_auto_uses_compiled_kernel_on_cpu(monkeypatch):
    monkeypatch.delenv("SEQZOO_BACKEND", raising=False)
    assert _dispatch.select("selective_scan", "auto", "cpu") == "cpp"
    called = []
    real = torch.ops.seqzoo.selective_scan

    class Spy:
        def __call__(self, *args):
            called.append(args[-1])
            return real(*args)

    monkeypatch.setattr(torch.ops.seqzoo, "selective_scan", Spy())
    t = _inputs(requires_grad=False)
    selective_scan(**t)
    assert called == [0], "auto did not call the compiled op, or kept checkpoints without autograd"
    t = _inputs(requires_grad=True)
    selective_scan(**t)
    assert called[-1] == ss_mod.CHECKPOINT_CHUNK


def test_bad_inputs():
    t = _inputs(requires_grad=False)
    with pytest.raises(ValueError, match=r"u must be \(B, D, L\)"):
        selective_scan(**{**t, "u": t["u"][0]})
    with pytest.raises(ValueError, match="delta must have u's shape"):
        selective_scan(**{**t, "delta": t["delta"][..., :3]})
    with pytest.raises(ValueError, match=r"A must be \(D, N\)"):
        selective_scan(**{**t, "A": t["A"][:3]})
    with pytest.raises(ValueError, match=r"B must be \(B, N, L\)"):
        selective_scan(**{**t, "B": t["B"][:, :2]})
    with pytest.raises(ValueError, match="groups G = 4 must divide D = 6"):
        g = torch.randn(2, 4, 5, 37, dtype=torch.float64)
        selective_scan(**{**t, "B": g, "C": g})
    with pytest.raises(ValueError, match=r"initial_state must be \(B, D, N\)"):
        selective_scan(**{**t, "initial_state": t["initial_state"][..., :2]})
    with pytest.raises(ValueError, match=r"D must be \(D,\)"):
        selective_scan(**{**t, "D": torch.ones(5, dtype=torch.float64)})
    with pytest.raises(TypeError, match="complex"):
        selective_scan(**{**t, "A": t["A"].to(torch.complex128)})
    with pytest.raises(TypeError, match="dtype torch.int64"):
        selective_scan(**{**t, "u": t["u"].long()})
    with pytest.raises(ValueError, match="unknown backend 'fast'.*mamba_ssm"):
        selective_scan(**t, backend="fast")
