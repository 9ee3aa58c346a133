"""The CUDA sources compile with nvcc, and their kernels compute what the CPU kernels do
(slow: minutes; nothing runs on a GPU here).

1. ``scripts/check_cuda.py`` compiles every csrc/**/*.cu with nvcc for sm_90.
2. The emulator test compiles csrc/{causal_conv1d,diag_scan,selective_scan}/*_cuda.cu with
   g++ against csrc/cuda/emulation.h (each CUDA thread a fiber on the CPU) into a library
   that registers them as the ops' CUDA kernels, then calls those kernels on CPU tensors
   (through the dispatcher, ``redispatch`` to the CUDA key) and compares every output and
   gradient with seqzoo's CPU kernels and references, in float64 (and fp32/bf16/fp16 where
   the kernels take them). Outputs are allocated NaN-filled (deterministic mode), so an
   element a kernel fails to write shows up. It runs in a subprocess: the emulated kernels
   stay registered for the life of the process.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMULATED_OPS = ("causal_conv1d", "diag_scan", "selective_scan")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_sources_compile():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_cuda.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CUDA sources compiled" in r.stdout


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or shutil.which("g++") is None, reason="needs g++ on Linux (ucontext)")
def test_cuda_kernels_on_the_cpu_emulator(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]
    for op in EMULATED_OPS:
        assert f"{op}: emulated CUDA kernels agree" in r.stdout, r.stdout[-3000:]


# ---------------------------------------------------------------- the subprocess


def _build(build_dir: Path) -> None:
    """Compile the ops' .cu files (and the CPU sources their input checks live in) with g++
    and the emulator, and load the library: it registers them under the CUDA key."""
    import seqzoo._C  # noqa: F401  the schemas
    from torch.utils.cpp_extension import load

    build_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for op in EMULATED_OPS:
        shim = build_dir / f"{op}_cuda_emulated.cpp"
        shim.write_text(f'#include "{op}/{op}_cuda.cu"\n')
        sources += [str(shim), str(ROOT / "csrc" / op / f"{op}_cpu.cpp")]
    load(name="seqzoo_cuda_emulated", sources=sources, extra_include_paths=[str(ROOT / "csrc")],
         extra_cflags=["-O1", "-std=c++20", "-DSEQZOO_CUDA_EMULATION", "-fno-trapping-math"],
         build_directory=str(build_dir), is_python_module=False, verbose=False)


def _rel(a, b) -> float:
    import torch

    if not b.numel():
        return 0.0
    a, b = (torch.view_as_real(t) if t.is_complex() else t for t in (a, b))
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


def _randn(g, *shape, complex_: bool = False):
    """float64 (or complex128) normal samples from generator g."""
    import torch

    re = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.complex(re, torch.randn(*shape, generator=g, dtype=torch.float64)) if complex_ else re


def _on_cuda(op: str):
    """Call the CUDA kernel registered for torch.ops.seqzoo.<op> (the emulated one) on CPU tensors."""
    import torch

    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    overload = getattr(torch.ops.seqzoo, op).default
    return lambda *args: overload.redispatch(keys, *args)


def _check_causal_conv1d() -> None:
    import torch

    from seqzoo.ops.causal_conv1d import ref

    fwd, bwd = _on_cuda("causal_conv1d"), _on_cuda("causal_conv1d_backward")
    cpu_bwd = torch.ops.seqzoo.causal_conv1d_backward
    shapes = [(2, 5, 23, 4), (1, 33, 130, 2), (2, 3, 1, 3), (1, 2, 2, 4), (1, 40, 300, 5), (1, 3, 5, 1)]
    for (B, D, L, W), silu, bias, state, channel_last in itertools.product(shapes, *[(False, True)] * 4):
        g = torch.Generator().manual_seed(B * 1000 + L * 10 + W)
        r = lambda *s, g=g: _randn(g, *s)  # noqa: E731
        x = r(B, L, D).transpose(1, 2) if channel_last else r(B, D, L)  # a transposed view is read as it is
        w, b, s = r(D, W), r(D) if bias else None, r(B, D, W - 1) if state else None
        out, final = fwd(x, w, b, s, silu)
        out_r, final_r = ref.causal_conv1d(x, w, b, s, True, "silu" if silu else None)
        assert out.is_contiguous() and final.is_contiguous()
        assert _rel(out, out_r) < 1e-13 and _rel(final, final_r) < 1e-15, (B, D, L, W)
        dout, dfinal = r(B, D, L), r(B, D, W - 1)
        for df in (dfinal, None):
            got = bwd(dout, df, x, w, b, s, silu)
            want = cpu_bwd(dout, df, x.contiguous(), w, b, s, silu)
            for name, a, c in zip(("dx", "dweight", "dbias", "dinit"), got, want):
                assert a.shape == c.shape and _rel(a, c) < 1e-13, (name, B, D, L, W, silu)
    # fp16/bf16 x read and written as such, weights in x's dtype or fp32; fp32 arithmetic
    for dtype, wdtype, tol in ((torch.bfloat16, torch.float32, 1e-2), (torch.bfloat16, torch.bfloat16, 1e-2),
                               (torch.float16, torch.float32, 2e-3), (torch.float32, torch.float32, 1e-5)):
        g = torch.Generator().manual_seed(1)
        B, D, L, W = 2, 70, 260, 4
        x = torch.randn(B, L, D, generator=g).to(dtype).transpose(1, 2)
        w, b = torch.randn(D, W, generator=g).to(wdtype), torch.randn(D, generator=g).to(wdtype)
        s = torch.randn(B, D, W - 1, generator=g).to(dtype)
        out, final = fwd(x, w, b, s, True)
        assert out.dtype == final.dtype == dtype
        out_r, final_r = ref.causal_conv1d(*(t.double() for t in (x, w, b, s)), True, "silu")
        assert _rel(out, out_r) < tol and _rel(final, final_r) == 0.0
        dout, dfinal = torch.randn(B, D, L, generator=g).to(dtype), torch.randn(B, D, W - 1, generator=g).to(dtype)
        got = bwd(dout, dfinal, x, w, b, s, True)
        want = cpu_bwd(*(t.double() for t in (dout, dfinal)), x.double().contiguous(), *(t.double() for t in (w, b, s)), True)
        assert [t.dtype for t in got] == [dtype, wdtype, dtype, dtype]
        for a, c in zip(got, want):
            assert _rel(a, c) < tol, dtype


def _check_diag_scan() -> None:
    import torch

    from seqzoo.ops.diag_scan import ref

    fwd, bwd = _on_cuda("diag_scan"), _on_cuda("diag_scan_backward")
    tols = {torch.float64: 1e-13, torch.complex128: 1e-13, torch.float32: 1e-5, torch.complex64: 1e-5,
            torch.bfloat16: 2e-2, torch.float16: 2e-3}
    # (B, L, D): vector and scalar (D odd or unaligned) paths, one and several tiles in time
    shapes = [(2, 70, 36), (1, 1, 8), (3, 200, 5), (1, 130, 64), (1, 600, 3)]
    for dtype, tol in tols.items():
        wide = torch.complex128 if dtype.is_complex else torch.float64
        for (B, L, D), a_batch, a_time, h0, unaligned in itertools.product(shapes, *[(False, True)] * 4):
            g = torch.Generator().manual_seed(L * 7 + D)
            r = lambda *s, g=g, c=dtype.is_complex: _randn(g, *s, complex_=c)  # noqa: E731
            # a of (B or 1, L or 1, D), or a view starting one element in (unaligned rows)
            a = r(B if a_batch else 1, L if a_time else 1, D + unaligned)[..., unaligned:]
            a = (a / a.abs().clamp(min=1) * 0.98).to(dtype)  # |a| < 1, so nothing overflows
            if not unaligned:
                a = a.contiguous()
            b, s = r(B, L, D).to(dtype), r(B, D).to(dtype) if h0 else None
            h = fwd(a, b, s)
            h_r, _ = ref.diag_scan(a.to(wide), b.to(wide), None if s is None else s.to(wide))
            assert _rel(h, h_r) < tol, (dtype, B, L, D)
            gh = r(B, L, D).to(dtype)
            got = bwd(a, h, gh, s)
            want = torch.ops.seqzoo.diag_scan_backward(a.contiguous(), h, gh, s)
            for name, x, y in zip(("da", "db", "dh0"), got, want):
                assert _rel(x, y) < tol, (name, dtype, B, L, D)


def _check_selective_scan() -> None:
    import torch

    fwd, bwd = _on_cuda("selective_scan"), _on_cuda("selective_scan_backward")
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias", "dh0")
    # (B, D, L, N, G, chunk): every state-size bucket, groups, a partial last tile, L = 1
    cases = [(2, 4, 37, 16, 1, 16), (1, 32, 70, 16, 2, 32), (1, 3, 20, 5, 1, 16), (2, 6, 50, 3, 3, 16),
             (1, 2, 40, 33, 1, 16), (1, 2, 33, 64, 2, 32), (1, 1, 20, 100, 1, 16), (1, 2, 18, 256, 1, 16),
             (1, 8, 1, 16, 1, 16), (1, 64, 40, 8, 1, 64)]
    for (B, D, L, N, G, chunk), gate, extras, softplus in itertools.product(cases, *[(True, False)] * 3):
        g = torch.Generator().manual_seed(B * 100 + D * 10 + L + N)
        r = lambda *s, g=g: _randn(g, *s)  # noqa: E731
        delta = r(B, D, L) * 0.5 if softplus else r(B, D, L).abs() * 0.3
        A = -torch.rand(D, N, generator=g, dtype=torch.float64) * 2 - 0.2
        args = (r(B, D, L), delta, A, r(B, G, N, L), r(B, G, N, L), r(D) if extras else None,
                r(B, D, L) if gate else None, r(D) * 0.3 if extras else None, r(B, D, N) if extras else None,
                softplus, chunk)
        got, want = fwd(*args), torch.ops.seqzoo.selective_scan(*args)
        for name, a, c in zip(("out", "last", "checkpoints"), got, want):
            assert _rel(a, c) < 1e-12, (name, B, D, L, N, G)
        for dlast in (r(B, D, N), None):
            bargs = (r(B, D, L), dlast, *args[:8], want[2], softplus, chunk)  # no h0 in the backward
            for name, a, c in zip(names, bwd(*bargs), torch.ops.seqzoo.selective_scan_backward(*bargs)):
                assert a.shape == c.shape and _rel(a, c) < 1e-11, (name, B, D, L, N, G)
    # fp32
    B, D, L, N = 2, 16, 100, 16
    g = torch.Generator().manual_seed(3)
    args = (torch.randn(B, D, L, generator=g), torch.randn(B, D, L, generator=g) * 0.5, -torch.rand(D, N, generator=g) - 0.5,
            torch.randn(B, 1, N, L, generator=g), torch.randn(B, 1, N, L, generator=g), torch.randn(D, generator=g),
            torch.randn(B, D, L, generator=g), torch.randn(D, generator=g), None, True, 64)
    for name, a, c in zip(("out", "last"), fwd(*args), torch.ops.seqzoo.selective_scan(*(t.double() if isinstance(t, torch.Tensor) else t for t in args))):
        assert _rel(a, c) < 1e-5, name


def _emulated_checks(build_dir: Path) -> None:
    import torch

    torch.use_deterministic_algorithms(True)  # with fill_uninitialized_memory: empty() is NaN
    torch.utils.deterministic.fill_uninitialized_memory = True
    _build(build_dir)
    for op, check in (("causal_conv1d", _check_causal_conv1d), ("diag_scan", _check_diag_scan),
                      ("selective_scan", _check_selective_scan)):
        check()
        print(f"{op}: emulated CUDA kernels agree with the CPU kernels", flush=True)


if __name__ == "__main__":
    _emulated_checks(Path(sys.argv[1]))
