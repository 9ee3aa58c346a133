"""The compiled diagonal scan against its reference (seqzoo/ops/diag_scan/ref.py).

The comparisons run on every device in ``tests.helpers.DEVICES``: on CUDA (marker ``cuda``)
they test the extension's CUDA kernel, and skip without a GPU or without that kernel;
fuzz, thread and dispatch tests stay on the CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqzoo import _ext
from seqzoo.ops import _dispatch, diag_scan
from seqzoo.ops.diag_scan import ref
from tests.helpers import DEVICES, compiled_backend, rel_err

needs_ext = pytest.mark.skipif(not _ext.has_kernel("diag_scan", "cpu"), reason="seqzoo._C not built")

DTYPES = [torch.float64, torch.complex128]


def _inputs(B, L, D, dtype, a_shape=None, h0=True, requires_grad=True, device="cpu"):
    """Generated on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(B * 1000 + L * 10 + D)
    real = torch.float64
    a_shape = a_shape or (B, L, D)
    # |a| < 1 keeps the recurrence stable, as a discretised SSM's decay is
    a = torch.rand(a_shape, generator=g, dtype=real) * 0.98
    b = torch.randn(B, L, D, generator=g, dtype=real)
    x0 = torch.randn(B, D, generator=g, dtype=real) if h0 else None
    if dtype.is_complex:
        a = torch.polar(a, torch.rand(a_shape, generator=g, dtype=real) * 6.28)
        b = torch.complex(b, torch.randn(B, L, D, generator=g, dtype=real))
        x0 = torch.complex(x0, torch.randn(B, D, generator=g, dtype=real)) if h0 else None
    # moved before requires_grad_, so that they stay leaves
    a, b = a.to(device).requires_grad_(requires_grad), b.to(device).requires_grad_(requires_grad)
    x0 = x0.to(device).requires_grad_(requires_grad) if h0 else None
    return a, b, x0


def _grads(fn, a, b, x0, seed=3):
    h, final = fn(a, b, x0)
    g = torch.Generator().manual_seed(seed)
    gh = torch.randn(h.shape, generator=g, dtype=h.dtype).to(h.device)
    gf = torch.randn(final.shape, generator=g, dtype=final.dtype).to(h.device)
    # a loss touching all states and (again) the final state
    loss = (h * gh.conj()).real.sum() + (final * gf.conj()).real.sum()
    inputs = [t for t in (a, b, x0) if t is not None]
    return h, final, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "a_shape", [None, (1, 37, 19), (3, 1, 19), (1, 1, 19)], ids=["full", "batch-bcast", "time-bcast", "const"]
)
@pytest.mark.parametrize("h0", [True, False])
def test_matches_reference(dtype, a_shape, h0, device):
    backend = compiled_backend("diag_scan", device)
    a, b, x0 = _inputs(3, 37, 19, dtype, a_shape, h0, device=device)
    h, f, g = _grads(lambda *t: diag_scan(*t, backend=backend), a, b, x0)
    h_ref, f_ref, g_ref = _grads(ref.diag_scan, a, b, x0)
    assert rel_err(h, h_ref) < 1e-12
    assert rel_err(f, f_ref) < 1e-12
    for got, want in zip(g, g_ref):
        assert got.shape == want.shape
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_trailing_dims_and_noncontiguous(device):
    backend = compiled_backend("diag_scan", device)
    a, b, x0 = _inputs(2, 23, 24, torch.float64, requires_grad=False, device=device)
    a4, b4, x04 = a.view(2, 23, 4, 6), b.view(2, 23, 4, 6), x0.view(2, 4, 6)
    h, f = diag_scan(a4, b4, x04, backend=backend)
    h_ref, f_ref = ref.diag_scan(a4, b4, x04)
    assert h.shape == (2, 23, 4, 6) and rel_err(h, h_ref) < 1e-12 and rel_err(f, f_ref) < 1e-12
    bt = b.transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous
    assert not bt.is_contiguous()
    assert rel_err(diag_scan(a, bt, backend=backend)[0], ref.diag_scan(a, b)[0]) < 1e-12
    # a per-step scalar broadcast over channels, and a 1-D decay
    a_scalar = torch.rand(2, 23, 1, dtype=torch.float64).to(device)
    assert rel_err(diag_scan(a_scalar, b, backend=backend)[0], ref.diag_scan(a_scalar, b)[0]) < 1e-12
    a_1d = torch.rand(24, dtype=torch.float64).to(device)
    assert rel_err(diag_scan(a_1d, b, backend=backend)[0], ref.diag_scan(a_1d, b)[0]) < 1e-12


@needs_ext
@pytest.mark.parametrize("threads", [2, 3])
def test_multithreaded_partitioning(threads):
    """Work split over threads and channel blocks (sizes that do not divide evenly)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for B, L, D in [(1, 300, 700), (5, 129, 33), (3, 2000, 17)]:
            a, b, x0 = _inputs(B, L, D, torch.float64, h0=True)
            h, f, g = _grads(lambda *t: diag_scan(*t, backend="cpp"), a, b, x0)
            h_ref, f_ref, g_ref = _grads(ref.diag_scan, a, b, x0)
            assert rel_err(h, h_ref) < 1e-12 and rel_err(f, f_ref) < 1e-12
            assert all(rel_err(x, y) < 1e-12 for x, y in zip(g, g_ref))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("device", DEVICES)
def test_real_decay_complex_input_promotes(device):
    backend = compiled_backend("diag_scan", device)
    a = torch.rand(2, 9, 5, dtype=torch.float64).to(device)
    b = torch.randn(2, 9, 5, dtype=torch.complex128).to(device)
    h, _ = diag_scan(a, b, backend=backend)
    assert h.dtype == torch.complex128
    assert rel_err(h, ref.diag_scan(a.to(torch.complex128), b)[0]) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_fp32(dtype, device):
    backend = compiled_backend("diag_scan", device)
    a, b, x0 = _inputs(2, 300, 40, torch.float64, requires_grad=False, device=device)
    h, _ = diag_scan(a.to(dtype), b.to(dtype), x0.to(dtype), backend=backend)
    h_ref, _ = ref.diag_scan(a.to(dtype).double(), b.to(dtype).double(), x0.to(dtype).double())
    assert h.dtype == dtype
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    assert rel_err(h.double(), h_ref) < tol


@pytest.mark.parametrize("device", DEVICES)
def test_length_one_and_empty(device):
    backend = compiled_backend("diag_scan", device)
    a, b, x0 = _inputs(2, 1, 3, torch.float64, requires_grad=False, device=device)
    h, f = diag_scan(a, b, x0, backend=backend)
    assert rel_err(h[:, 0], a[:, 0] * x0 + b[:, 0]) < 1e-15 and torch.equal(f, h[:, 0])
    h, f = diag_scan(a[:, :0], b[:, :0], x0, backend=backend)
    assert h.shape == (2, 0, 3) and torch.equal(f, x0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck(dtype, device):
    backend = compiled_backend("diag_scan", device)
    a, b, x0 = _inputs(2, 6, 3, dtype, device=device)
    assert torch.autograd.gradcheck(lambda *t: diag_scan(*t, backend=backend), (a, b, x0))
    a1 = torch.rand(1, 1, 3, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda a_, b_: diag_scan(a_, b_, backend=backend)[0], (a1, b.real.detach().requires_grad_()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
def test_opcheck(dtype, device):
    """The fake kernels, schema and autograd registration agree with the device's kernel."""
    compiled_backend("diag_scan", device)
    a, b, x0 = _inputs(2, 8, 5, torch.float64, requires_grad=False, device=device)
    a, b, x0 = a.to(dtype), b.to(dtype), x0.to(dtype)
    for args in [(a, b, x0), (a, b, None), (a[:1, :1], b, x0)]:
        args = tuple(t.clone().requires_grad_() if t is not None else None for t in args)
        torch.library.opcheck(torch.ops.seqzoo.diag_scan.default, args)
    h = torch.ops.seqzoo.diag_scan(a, b, x0)
    torch.library.opcheck(torch.ops.seqzoo.diag_scan_backward.default, (a, h, torch.randn_like(h), x0))


@needs_ext
@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 4),
    L=st.integers(1, 40),
    rest=st.lists(st.integers(1, 9), min_size=1, max_size=2),
    bcast=st.sampled_from(["full", "batch", "time", "both"]),
    complex_=st.booleans(),
)
def test_shape_fuzz(B, L, rest, bcast, complex_):
    dtype = torch.complex128 if complex_ else torch.float64
    shape = (B, L, *rest)
    a_shape = {"full": shape, "batch": (1, L, *rest), "time": (B, 1, *rest), "both": (1, 1, *rest)}[bcast]
    a = torch.rand(a_shape, dtype=torch.float64).to(dtype)
    b = torch.randn(shape, dtype=dtype)
    x0 = torch.randn((B, *rest), dtype=dtype)
    h, f = diag_scan(a, b, x0, backend="cpp")
    h_ref, f_ref = ref.diag_scan(a, b, x0)
    assert h.shape == shape and rel_err(h, h_ref) < 1e-12 and rel_err(f, f_ref) < 1e-12


def test_parallel_reference_agrees_with_loop():
    a, b, x0 = _inputs(2, 45, 7, torch.complex128, requires_grad=False)
    h, f = ref.diag_scan_parallel(a, b, x0)
    h_ref, f_ref = ref.diag_scan(a, b, x0)
    assert rel_err(h, h_ref) < 1e-12 and rel_err(f, f_ref) < 1e-12


# ---------------------------------------------------------------- dispatch
@needs_ext
def test_auto_picks_compiled_kernel(monkeypatch, caplog):
    monkeypatch.delenv("SEQZOO_BACKEND", raising=False)
    assert _dispatch.select("diag_scan", "auto", "cpu") == "cpp"
    called = []
    real = torch.ops.seqzoo.diag_scan

    class Spy:
        def __call__(self, *args):
            called.append(True)
            return real(*args)

    monkeypatch.setattr(torch.ops.seqzoo, "diag_scan", Spy())
    a, b, _ = _inputs(1, 5, 3, torch.float64, requires_grad=False, h0=False)
    diag_scan(a, b)
    assert called, "backend='auto' did not call the compiled op"


def test_fallback_without_extension_warns_once(monkeypatch):
    monkeypatch.delenv("SEQZOO_BACKEND", raising=False)
    monkeypatch.setattr(_ext, "has_kernel", lambda op, dev: False)
    monkeypatch.setattr(_ext, "available", lambda: False)
    monkeypatch.setattr(_ext, "load_error", lambda: "ImportError: pretend it is missing")
    monkeypatch.setattr(_dispatch, "_warned", set())
    a, b, x0 = _inputs(2, 9, 4, torch.float64, requires_grad=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h, _ = diag_scan(a, b, x0)
        diag_scan(a, b, x0)
    msgs = [str(m.message) for m in w if issubclass(m.category, RuntimeWarning)]
    assert len(msgs) == 1 and "build it with" in msgs[0] and "pretend it is missing" in msgs[0]
    assert rel_err(h, ref.diag_scan(a, b, x0)[0]) < 1e-15
    with pytest.raises(RuntimeError, match="build it with"):
        diag_scan(a, b, x0, backend="cpp")


def test_backend_errors(monkeypatch):
    a, b, _ = _inputs(1, 4, 2, torch.float64, requires_grad=False, h0=False)
    with pytest.raises(ValueError, match="unknown backend 'fast'.*auto, ref, cpp, cuda"):
        diag_scan(a, b, backend="fast")
    with pytest.raises(ValueError, match="cuda tensors"):
        diag_scan(a, b, backend="cuda")
    monkeypatch.setenv("SEQZOO_BACKEND", "ref")
    assert _dispatch.select("diag_scan", "auto", "cpu") == "ref"
    monkeypatch.setenv("SEQZOO_BACKEND", "turbo")
    with pytest.raises(ValueError, match="SEQZOO_BACKEND"):
        diag_scan(a, b)


def test_bad_inputs():
    b = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="broadcast"):
        diag_scan(torch.rand(2, 5, 4), b)
    with pytest.raises(ValueError, match="initial_state"):
        diag_scan(torch.rand(2, 5, 3), b, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="dtype"):
        diag_scan(torch.ones(2, 5, 3, dtype=torch.long), b)
    with pytest.raises(ValueError, match=r"\(B, L, \*\)"):
        diag_scan(torch.rand(3), torch.rand(3))
