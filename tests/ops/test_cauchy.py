"""The compiled Cauchy kernel against its reference (seqzoo/ops/cauchy/ref.py).

The comparisons run on every device in ``tests.helpers.DEVICES``: on CUDA (marker ``cuda``)
they test the extension's CUDA kernel, and skip without a GPU or without that kernel;
the fuzz and dispatch tests stay on the CPU."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqzoo import _ext
from seqzoo.ops import _dispatch, cauchy
from seqzoo.ops.cauchy import ref
from tests.helpers import DEVICES, compiled_backend, rel_err

needs_ext = pytest.mark.skipif(not _ext.has_kernel("cauchy", "cpu"), reason="seqzoo._C not built")


def _inputs(M, N, L, dtype=torch.complex128, seed=0, requires_grad=True, device="cpu"):
    """Generated on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    real = dtype.to_real()
    v = torch.complex(torch.randn(M, N, generator=g, dtype=real), torch.randn(M, N, generator=g, dtype=real))
    # poles in the left half plane (an SSM's ΔΛ), points on the imaginary axis and beyond
    w = torch.complex(-torch.rand(M, N, generator=g, dtype=real) - 0.1, 3 * torch.randn(M, N, generator=g, dtype=real))
    z = torch.complex(torch.randn(L, generator=g, dtype=real), 4 * torch.randn(L, generator=g, dtype=real))
    return [t.to(device).requires_grad_(requires_grad) for t in (v, z, w)]


def _grads(fn, v, z, w, seed=5):
    out = fn(v, z, w)
    g = torch.Generator().manual_seed(seed)
    go = torch.complex(torch.randn(out.shape, generator=g, dtype=out.real.dtype), torch.randn(out.shape, generator=g, dtype=out.real.dtype))
    go = go.to(out.device)
    loss = (out * go.conj()).real.sum()
    return out, torch.autograd.grad(loss, [v, z, w])


def test_reference_is_the_cauchy_sum():
    """The spec itself, against a written-out double loop."""
    v, z, w = _inputs(2, 3, 4, requires_grad=False)
    for conj in (False, True):
        want = torch.zeros(2, 4, dtype=torch.complex128)
        for m in range(2):
            for l in range(4):
                for n in range(3):
                    want[m, l] += v[m, n] / (z[l] - w[m, n])
                    if conj:
                        want[m, l] += v[m, n].conj() / (z[l] - w[m, n].conj())
        assert rel_err(ref.cauchy(v, z, w, conj), want) < 1e-14


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("conj", [False, True])
@pytest.mark.parametrize("shape", [(3, 37, 29), (1, 1, 1), (2, 130, 70)])
def test_matches_reference_float64(conj, shape, device):
    backend = compiled_backend("cauchy", device)
    v, z, w = _inputs(*shape, device=device)
    out, g = _grads(lambda *t: cauchy(*t, conj=conj, backend=backend), v, z, w)
    out_ref, g_ref = _grads(lambda *t: ref.cauchy(*t, conj), v, z, w)
    assert rel_err(out, out_ref) < 1e-12
    for got, want in zip(g, g_ref):
        assert got.shape == want.shape and rel_err(got, want) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("conj", [False, True])
def test_float32_close_to_float64_reference(conj, device):
    backend = compiled_backend("cauchy", device)
    v, z, w = _inputs(4, 64, 50, requires_grad=False, device=device)
    out = cauchy(v.to(torch.complex64), z.to(torch.complex64), w.to(torch.complex64), conj=conj, backend=backend)
    assert out.dtype == torch.complex64
    assert rel_err(out.to(torch.complex128), ref.cauchy(v, z, w, conj)) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_large_points_do_not_overflow_float32(device):
    """S4 evaluates z = 2(1-ω)/(1+ω) up to ω ≈ -1, where |z| ~ 1e16: the result v/z must
    stay finite (a common denominator (z-w)(z-conj w) would overflow float32)."""
    backend = compiled_backend("cauchy", device)
    v, _, w = _inputs(2, 8, 1, requires_grad=False, device=device)
    z = torch.tensor([3e16j, -2e16 + 1e15j], dtype=torch.complex128, device=device)
    for conj in (False, True):
        want = ref.cauchy(v, z, w, conj)
        got = cauchy(v.to(torch.complex64), z.to(torch.complex64), w.to(torch.complex64), conj=conj, backend=backend)
        assert torch.isfinite(torch.view_as_real(got)).all()
        assert rel_err(got.to(torch.complex128), want) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_broadcast_batch_dims(device):
    backend = compiled_backend("cauchy", device)
    v, z, w = _inputs(6, 9, 11, requires_grad=False, device=device)
    v4 = v.view(2, 3, 9)
    w1 = w[:3]  # (3, 9): broadcast over the leading dim of v
    out = cauchy(v4, z, w1, conj=True, backend=backend)
    assert out.shape == (2, 3, 11)
    assert rel_err(out, ref.cauchy(v4, z, w1, True)) < 1e-12
    # gradient of a broadcast w sums over the broadcast dim
    w1 = w1.clone().requires_grad_()
    (cauchy(v4, z, w1, backend=backend).abs().sum()).backward()
    g1 = w1.grad.clone()
    w1.grad = None
    ref.cauchy(v4, z, w1).abs().sum().backward()
    assert rel_err(g1, w1.grad) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("conj", [False, True])
def test_gradcheck(conj, device):
    backend = compiled_backend("cauchy", device)
    v, z, w = _inputs(2, 5, 4, device=device)
    assert torch.autograd.gradcheck(lambda *t: cauchy(*t, conj=conj, backend=backend), (v, z, w))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("conj", [False, True])
def test_opcheck(dtype, conj, device):
    """The fake kernels, schema and autograd registration agree with the device's kernel."""
    compiled_backend("cauchy", device)
    v, z, w = _inputs(3, 7, 6, dtype=dtype, device=device)
    torch.library.opcheck(torch.ops.seqzoo.cauchy.default, (v, z, w, conj))
    g = torch.randn(3, 6, dtype=dtype).to(device)
    for need_z in (False, True):
        torch.library.opcheck(
            torch.ops.seqzoo.cauchy_backward.default,
            (g, v.detach(), z.detach(), w.detach(), conj, need_z),
        )


@needs_ext
@settings(max_examples=20, deadline=None)
@given(M=st.integers(1, 5), N=st.integers(1, 80), L=st.integers(1, 70), conj=st.booleans())
def test_shape_fuzz(M, N, L, conj):
    v, z, w = _inputs(M, N, L, seed=M * 10000 + N * 100 + L, requires_grad=False)
    assert rel_err(cauchy(v, z, w, conj=conj, backend="cpp"), ref.cauchy(v, z, w, conj)) < 1e-12


@needs_ext
def test_auto_picks_compiled_kernel(monkeypatch):
    monkeypatch.delenv("SEQZOO_BACKEND", raising=False)
    assert _dispatch.select("cauchy", "auto", "cpu") == "cpp"


def test_bad_inputs():
    v, z, w = _inputs(2, 5, 4, requires_grad=False)
    with pytest.raises(ValueError, match="1-D"):
        cauchy(v, z.view(2, 2), w)
    with pytest.raises(ValueError, match="broadcast"):
        cauchy(v, z, w[:, :3])
    with pytest.raises(TypeError, match="complex"):
        cauchy(v, z, torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown backend"):
        cauchy(v, z, w, backend="fast")
