#!/usr/bin/env python3
"""The one command for a machine with a GPU: build, test, and time seqzoo against its
references, the peers and the hardware.

    python scripts/gpu_check.py                 # build for the local GPU, pytest -m cuda, report
    python scripts/gpu_check.py --skip-build    # the extension is already built in place
    python scripts/gpu_check.py --device cpu --quick --skip-build --skip-tests   # try the report here

Steps (each timed; the whole run is sized for under 6 minutes on one H200, of which the
build takes about 2):

1. ``python setup.py build_ext --inplace`` with ``TORCH_CUDA_ARCH_LIST`` set to the local
   GPU's compute capability and ``MAX_JOBS`` to the CPU count.
2. ``pytest -m cuda``: every op against its reference (forward, backward, final state), every
   layer's parallel == step loop == chunked and the mixed-precision contract, on the GPU.
3. The report, printed and written to ``--out`` (``report.md`` and ``report.json``):
   - environment: GPU, torch, which compiled kernels the extension has, which peers import
     and whether seqzoo's dispatcher found them ready (load + probe);
   - each kernel against its reference at a small size: max relative error (fp64 inputs
     where the kernel takes them) and time, kernel vs reference;
   - the kernels at the sizes of ``docs/benchmarks.md``'s GPU table against the peers that
     import here (mamba_ssm's Triton SSD and ``selective_scan_ref``, causal-conv1d,
     flash-linear-attention's chunk kernel, PyTorch SDPA) and the memory-bandwidth bound
     (``x.clone()``, ``torch.addcmul`` moving the same bytes);
   - every registered layer's forward+backward time at B=8, L=4096, d_model=256 in fp32 and
     under bf16 autocast, with the SDPA attention layer as the baseline, and bf16 at L=16384.
Peers that do not import are reported as such (README "On a GPU" says how to bring them as
wheels to a machine without internet). Times are medians of CUDA-event timings after a
warm-up; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ---------------------------------------------------------------- timing


QUICK = False  # --quick: one warm-up and two timed runs per measurement


def bench(fn: Callable[[], object], device: str, reps: int = 10, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` (CUDA events on a GPU, wall clock on the CPU)."""
    if QUICK:
        reps, warmup = 2, 1
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    a, b = torch.view_as_real(a) if a.is_complex() else a, torch.view_as_real(b) if b.is_complex() else b
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


def fwd_bwd(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> Callable[[], None]:
    """A callable that runs ``fn`` and backpropagates a sum through it into ``inputs``."""

    def run():
        for t in inputs:
            t.grad = None
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        (out.real if out.is_complex() else out).float().sum().backward()

    return run


def fmt_ms(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def table(header: list[str], rows: list[list]) -> str:
    from seqzoo.timing import table as md

    return md(tuple(header), [tuple(r) for r in rows])


class Report:
    """Sections of Markdown, plus the raw rows as JSON."""

    def __init__(self):
        self.parts: list[str] = []
        self.data: dict[str, object] = {}

    def section(self, title: str, header: list[str], rows: list[list], key: str, note: str = "") -> None:
        text = f"## {title}\n\n" + (f"{note}\n\n" if note else "") + table(header, rows) + "\n"
        self.parts.append(text)
        self.data[key] = [dict(zip(header, map(str, r))) for r in rows]
        print(text, flush=True)

    def text(self, title: str, body: str) -> None:
        self.parts.append(f"## {title}\n\n{body}\n")
        print(f"## {title}\n\n{body}\n", flush=True)


def guarded(rows: list[list], label: list, width: int, fn: Callable[[], list]) -> None:
    """Append ``label + fn()``; on failure a row that says what failed (the report goes on)."""
    try:
        rows.append(label + fn())
    except Exception as e:  # noqa: BLE001  one failing measurement must not end the report
        msg = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        rows.append(label + [msg] + ["—"] * (width - len(label) - 1))
        traceback.print_exc()


# ---------------------------------------------------------------- steps


def build(device: str) -> float:
    t0 = time.time()
    env = dict(os.environ)
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        env.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    print(f"+ building seqzoo._C (TORCH_CUDA_ARCH_LIST={env.get('TORCH_CUDA_ARCH_LIST', '-')}, MAX_JOBS={env['MAX_JOBS']})", flush=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL if not os.environ.get("GPU_CHECK_VERBOSE") else None)
    return time.time() - t0


def run_tests(extra: list[str]) -> tuple[int, float, str]:
    t0 = time.time()
    import importlib.util

    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *extra]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append("--timeout=120")  # a hung kernel must not eat the whole session
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    print(tail, flush=True)
    return proc.returncode, time.time() - t0, tail


def environment(report: Report, device: str) -> None:
    import seqzoo
    from seqzoo import _ext
    from seqzoo.ops import _dispatch

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    rows = [["device", name], ["torch", torch.__version__ + (f" (CUDA {torch.version.cuda})" if device == "cuda" else "")],
            ["seqzoo._C", "loaded" if _ext.available() else f"not available: {_ext.load_error()}"]]
    for op in ("diag_scan", "selective_scan", "cauchy", "vandermonde", "causal_conv1d"):
        rows.append([f"kernel {op}", ", ".join(d for d in ("cpu", "cuda") if _ext.has_kernel(op, d)) or "none"])
    for op, extras in _dispatch._EXTRAS.items():
        for ename, spec in extras.items():
            if spec.package is None or device not in spec.devices:
                continue
            kernel, why = _dispatch.extra_status(op, ename, device)
            rows.append([f"peer {ename} for {op}", "ready (loaded, probe agreed with the reference)" if kernel is not None else why])
    try:
        import fla  # noqa: F401

        rows.append(["peer fla (flash-linear-attention)", f"imports ({getattr(fla, '__version__', '?')})"])
    except Exception as e:  # noqa: BLE001
        rows.append(["peer fla (flash-linear-attention)", f"not importable ({type(e).__name__})"])
    rows.append(["layers", ", ".join(seqzoo.list_layers())])
    report.section("Environment", ["what", "value"], rows, "environment")


def kernels_vs_reference(report: Report, device: str, quick: bool) -> None:
    """Each op at a small size: fp64 error against its reference and the time of both."""
    from seqzoo.ops import (
        cauchy,
        causal_conv1d,
        diag_scan,
        linear_attn,
        selective_scan,
        ssd,
        vandermonde,
    )
    from seqzoo.ops.cauchy import ref as cauchy_ref
    from seqzoo.ops.causal_conv1d import ref as cc_ref
    from seqzoo.ops.diag_scan import ref as ds_ref
    from seqzoo.ops.linear_attn import ref as la_ref
    from seqzoo.ops.selective_scan import ref as ss_ref
    from seqzoo.ops.ssd import ref as ssd_ref
    from seqzoo.ops.vandermonde import ref as vd_ref

    g = torch.Generator().manual_seed(0)
    f64, c128 = torch.float64, torch.complex128

    def rnd(*shape, dtype=f64, pos=False):
        t = torch.rand(*shape, generator=g, dtype=f64) if pos else torch.randn(*shape, generator=g, dtype=f64)
        return t.to(device=device, dtype=dtype) if not dtype.is_complex else torch.complex(t, torch.randn(*shape, generator=g, dtype=f64)).to(device)

    L = 32 if quick else 256
    cases: dict[str, tuple[Callable, Callable, list]] = {}
    a, b, h0 = rnd(4, L, 64, pos=True) * 0.98, rnd(4, L, 64), rnd(4, 64)
    cases[f"diag_scan (4, {L}, 64)"] = (lambda: diag_scan(a, b, h0), lambda: ds_ref.diag_scan(a, b, h0), [a, b, h0])
    u, dl, z = rnd(2, 32, L), rnd(2, 32, L, pos=True) * 0.5, rnd(2, 32, L)
    A, Bm, Cm, Dv = -rnd(32, 8, pos=True) - 0.5, rnd(2, 8, L), rnd(2, 8, L), rnd(32)
    h = rnd(2, 32, 8)
    cases[f"selective_scan (2, 32, {L}), N=8"] = (
        lambda: selective_scan(u, dl, A, Bm, Cm, Dv, z, None, True, h, True),
        lambda: ss_ref.selective_scan(u, dl, A, Bm, Cm, Dv, z, None, True, h, True), [u, dl, A, Bm, Cm, Dv, z, h])
    v, w = rnd(64, 32, dtype=c128), -rnd(64, 32, pos=True).to(c128) * 0.5 + 1j * rnd(64, 32)
    zz = torch.exp(2j * torch.pi * torch.arange(L, dtype=f64) / L).to(device)
    cases[f"cauchy (64, 32) x {L}"] = (lambda: cauchy(v, zz, w, conj=True), lambda: cauchy_ref.cauchy(v, zz, w, conj=True), [v, w])
    c, lz = rnd(64, 32, dtype=c128), (-rnd(64, 32, pos=True) * 0.1 + 1j * rnd(64, 32)).to(c128)
    cases[f"vandermonde (64, 32) x {4 * L}"] = (lambda: vandermonde(c, lz, 4 * L), lambda: vd_ref.vandermonde(c, lz, 4 * L), [c, lz])
    x, wc, bc, sc = rnd(2, 64, L), rnd(64, 4), rnd(64), rnd(2, 64, 3)
    cases[f"causal_conv1d (2, 64, {L}), W=4"] = (
        lambda: causal_conv1d(x, wc, bc, sc, True, "silu"), lambda: cc_ref.causal_conv1d(x, wc, bc, sc, True, "silu"), [x, wc, bc, sc])
    xs, dts, As = rnd(2, L, 4, 16), rnd(2, L, 4, pos=True) * 0.5, -rnd(4, pos=True) - 0.5
    Bs, Cs, hs = rnd(2, L, 1, 16), rnd(2, L, 1, 16), rnd(2, 4, 16, 16)
    cases[f"ssd chunked (2, {L}, 4, 16), N=16"] = (
        lambda: ssd(xs, dts, As, Bs, Cs, 32, hs, True), lambda: ssd_ref.ssd(xs, dts, As, Bs, Cs, 32, hs, True), [xs, dts, Bs, Cs, hs])
    q, k, vv = rnd(2, 4, L, 16, pos=True), rnd(2, 4, L, 16, pos=True), rnd(2, 4, L, 16)
    cases[f"linear_attn chunk (2, 4, {L}, 16)"] = (
        lambda: linear_attn(q, k, vv, mode="chunk"), lambda: la_ref.linear_attn(q, k, vv), [q, k, vv])

    rows = []
    for label, (fast, slow, ins) in cases.items():
        def measure(fast=fast, slow=slow, ins=ins):
            for t in ins:
                t.requires_grad_(True)
            got, want = fast(), slow()
            got, want = (got if isinstance(got, tuple) else (got,)), (want if isinstance(want, tuple) else (want,))
            err_f = max(rel(a_, b_) for a_, b_ in zip(got, want) if isinstance(a_, torch.Tensor))
            loss = lambda outs: sum((o.real if o.is_complex() else o).sum() for o in outs if isinstance(o, torch.Tensor))  # noqa: E731
            g1 = torch.autograd.grad(loss(got), ins, allow_unused=True)
            g2 = torch.autograd.grad(loss(want), ins, allow_unused=True)
            err_b = max(rel(a_, b_) for a_, b_ in zip(g1, g2) if a_ is not None and b_ is not None)
            t_fast, t_ref = bench(fwd_bwd(fast, ins), device, reps=5), bench(fwd_bwd(slow, ins), device, reps=3, warmup=1)
            return [f"{err_f:.1e}", f"{err_b:.1e}", fmt_ms(t_fast), fmt_ms(t_ref), f"{t_ref / t_fast:.1f}x"]

        guarded(rows, [label], 6, measure)
    report.section("Kernels against their references (float64, forward + backward)",
                   ["op (size)", "fwd rel err", "bwd rel err", "seqzoo ms", "reference ms", "speed-up"], rows, "kernels_vs_reference",
                   "`auto` backend (what users get); errors are max |a - b| / max |b| over outputs and final states, then over the input gradients.")


def kernels_vs_peers(report: Report, device: str, quick: bool) -> None:
    """The kernel table of docs/benchmarks.md: sizes of issue 13, peers and bandwidth bounds."""
    from seqzoo.ops import _dispatch, causal_conv1d, diag_scan, linear_attn, selective_scan, ssd

    s = 64 if quick else 1  # quick: every size divided by s
    dev = device
    rows: list[list] = []

    def gbps(nbytes: int, ms: float) -> str:
        return f"{nbytes / ms / 1e6:.0f} GB/s"

    # causal_conv1d vs x.clone() (fp32 and bf16), fwd and fwd+bwd
    for dtype in (torch.float32, torch.bfloat16):
        def cc(dtype=dtype):
            x = torch.randn(8, 4096 // s, 2048 // s, device=dev, dtype=dtype)
            w, b = torch.randn(4096 // s, 4, device=dev, dtype=dtype), torch.randn(4096 // s, device=dev, dtype=dtype)
            t_clone = bench(lambda: x.clone(), dev)
            t_f = bench(lambda: causal_conv1d(x, w, b, activation="silu"), dev)
            xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
            t_fb = bench(fwd_bwd(lambda: causal_conv1d(xg, wg, bg, activation="silu"), [xg, wg, bg]), dev)
            peer = "—"
            kernel, _ = _dispatch.extra_status("causal_conv1d", "causal_conv1d", dev) if dev == "cuda" else (None, None)
            if kernel is not None:
                peer = f"causal-conv1d fwd {fmt_ms(bench(lambda: kernel[0](x, w, b, activation='silu'), dev))} ms"
            return [fmt_ms(t_f), fmt_ms(t_fb), f"x.clone() {fmt_ms(t_clone)} ms: fwd {t_f / t_clone:.2f}x, bwd {(t_fb - t_f) / t_clone:.2f}x", peer]

        guarded(rows, [f"causal_conv1d {str(dtype)[6:]} B8 D{4096 // s} L{2048 // s} W4"], 5, cc)

    # selective scan fp32: fwd, fwd+bwd, bandwidth over u, Δ, z, B, C read + y written
    def sscan():
        B_, D_, N_, L_ = 8, 4096 // s, 16, 2048 // s
        u, dl, z = (torch.randn(B_, D_, L_, device=dev) for _ in range(3))
        A = -torch.rand(D_, N_, device=dev) - 0.5
        Bm, Cm = torch.randn(B_, N_, L_, device=dev), torch.randn(B_, N_, L_, device=dev)
        Dv, bias = torch.randn(D_, device=dev), torch.randn(D_, device=dev)
        args = [u, dl, A, Bm, Cm, Dv, z, bias]
        t_f = bench(lambda: selective_scan(*args, delta_softplus=True), dev)
        ins = [t.clone().requires_grad_() for t in args]
        t_fb = bench(fwd_bwd(lambda: selective_scan(*ins, delta_softplus=True), ins), dev)
        nbytes = 4 * (4 * B_ * D_ * L_ + 2 * B_ * N_ * L_)
        peer = "—"
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_ref

            Ls = 512 // s
            sl = [t[..., :Ls].contiguous() if t.dim() == 3 else t for t in args]
            t_ours = bench(lambda: selective_scan(*sl, delta_softplus=True), dev)
            t_ref = bench(lambda: selective_scan_ref(*sl, delta_softplus=True), dev, reps=3, warmup=1)
            peer = f"mamba_ssm selective_scan_ref at L={Ls}: {fmt_ms(t_ref)} ms = {t_ref / t_ours:.1f}x ours"
        except Exception as e:  # noqa: BLE001
            peer = f"mamba_ssm selective_scan_ref: not importable ({type(e).__name__})"
        kernel, _ = _dispatch.extra_status("selective_scan", "mamba_ssm", dev) if dev == "cuda" else (None, None)
        if kernel is not None:
            t_m = bench(lambda: kernel(u, dl, A, Bm, Cm, Dv, z, bias, True), dev)
            peer += f"; mamba_ssm CUDA fwd {fmt_ms(t_m)} ms (ours {t_f / t_m:.2f}x)"
        return [fmt_ms(t_f), fmt_ms(t_fb), f"fwd {gbps(nbytes, t_f)}; fwd+bwd = {t_fb / t_f:.1f}x fwd", peer]

    guarded(rows, [f"selective_scan fp32 B8 D{4096 // s} N16 L{2048 // s}"], 5, sscan)

    # SSD bf16 vs mamba_ssm's Triton kernel
    def ssd_row():
        B_, L_, H_, P_, N_ = 8, 4096 // s, 32 // (8 if quick else 1), 64, 128 // (8 if quick else 1)
        x = torch.randn(B_, L_, H_, P_, device=dev, dtype=torch.bfloat16)
        dt = (torch.rand(B_, L_, H_, device=dev) * 0.1).to(torch.bfloat16)
        A = -torch.rand(H_, device=dev) - 0.5
        Bm, Cm = (torch.randn(B_, L_, 1, N_, device=dev, dtype=torch.bfloat16) for _ in range(2))
        t_f = bench(lambda: ssd(x, dt, A, Bm, Cm, 64, backend="chunked"), dev, reps=5)
        ins = [t.clone().requires_grad_() for t in (x, dt, Bm, Cm)]
        t_fb = bench(fwd_bwd(lambda: ssd(ins[0], ins[1], A, ins[2], ins[3], 64, backend="chunked"), ins), dev, reps=5)
        kernel, why = _dispatch.extra_status("ssd", "mamba_ssm", dev) if dev == "cuda" else (None, "GPU only")
        if kernel is None:
            return [fmt_ms(t_f), fmt_ms(t_fb), "—", f"mamba_chunk_scan_combined: {why}"]
        t_m = bench(lambda: kernel(x, dt, A, Bm, Cm, 64), dev)
        insm = [t.clone().requires_grad_() for t in (x, dt, Bm, Cm)]
        t_mb = bench(fwd_bwd(lambda: kernel(insm[0], insm[1], A, insm[2], insm[3], 64), insm), dev)
        return [fmt_ms(t_f), fmt_ms(t_fb), "—", f"mamba_chunk_scan_combined {fmt_ms(t_m)} / {fmt_ms(t_mb)} ms: ours {t_f / t_m:.1f}x / {t_fb / t_mb:.1f}x"]

    guarded(rows, [f"ssd (own, chunked) bf16 B8 L{4096 // s} H32 P64 N128" + (" (quick: H4 N16)" if quick else "")], 5, ssd_row)

    # diag_scan fp32 vs a same-bytes elementwise op
    def ds():
        a = torch.rand(8, 4096 // s, 4096 // s, device=dev) * 0.9
        b = torch.randn_like(a)
        out = torch.empty_like(a)
        t = bench(lambda: diag_scan(a, b), dev)
        t_add = bench(lambda: torch.addcmul(b, a, b, out=out), dev)
        nbytes = 3 * a.numel() * 4
        ins = [a.clone().requires_grad_(), b.clone().requires_grad_()]
        t_fb = bench(fwd_bwd(lambda: diag_scan(*ins), ins), dev)
        return [fmt_ms(t), fmt_ms(t_fb), f"{gbps(nbytes, t)} = {100 * t_add / t:.0f} % of addcmul ({gbps(nbytes, t_add)})", "—"]

    guarded(rows, [f"diag_scan fp32 B8 L{4096 // s} D{4096 // s}"], 5, ds)

    # chunked linear attention bf16 vs fla and SDPA
    def la():
        B_, H_, L_, K_ = 4, 8, 16384 // s, 64
        q, k, v = (torch.randn(B_, H_, L_, K_, device=dev, dtype=torch.bfloat16) for _ in range(3))
        qf, kf = F.elu(q) + 1, F.elu(k) + 1
        t = bench(lambda: linear_attn(qf, kf, v, mode="chunk", output_final_state=False), dev)
        ins = [qf.clone().requires_grad_(), kf.clone().requires_grad_(), v.clone().requires_grad_()]
        t_fb = bench(fwd_bwd(lambda: linear_attn(*ins, mode="chunk", output_final_state=False), ins), dev)
        t_sdpa = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), dev)
        peers = [f"SDPA causal {fmt_ms(t_sdpa)} ms"]
        try:
            from fla.ops.linear_attn import chunk_linear_attn

            qt, kt, vt = (t_.transpose(1, 2).contiguous() for t_ in (qf, kf, v))  # fla: (B, T, H, K)
            t_fla = bench(lambda: chunk_linear_attn(qt, kt, vt, normalize=True), dev)
            peers.append(f"fla chunk_linear_attn {fmt_ms(t_fla)} ms (ours {t / t_fla:.2f}x)")
        except Exception as e:  # noqa: BLE001
            peers.append(f"fla: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}")
        return [fmt_ms(t), fmt_ms(t_fb), "—", "; ".join(peers)]

    guarded(rows, [f"linear_attn chunk bf16 B4 H8 L{16384 // s} K64"], 5, la)
    report.section("Kernels at benchmark sizes, against the peers and the bandwidth bound",
                   ["kernel (size)", "fwd ms", "fwd+bwd ms", "bound", "peers"], rows, "kernels_vs_peers")


def layers(report: Report, device: str, quick: bool) -> None:
    import seqzoo
    from seqzoo.speed import build_layer

    B_, L_, D_ = (2, 64, 16) if quick else (8, 4096, 256)
    long_L = 128 if quick else 16384
    rows = []
    base: dict[str, float] = {}
    for name in seqzoo.list_layers():
        def measure(name=name):
            out = []
            for L, dtypes in ((L_, (None, torch.bfloat16)), (long_L, (torch.bfloat16,))):
                torch.manual_seed(0)
                layer = build_layer(name, D_, L).to(device).train()
                x = torch.randn(B_, L, D_, device=device, requires_grad=True)

                def run(layer, x, dtype):
                    with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                        y, _ = layer(x, return_state=False)
                    return y

                for dtype in dtypes:
                    t = bench(fwd_bwd(lambda layer=layer, x=x, dtype=dtype: run(layer, x, dtype), [x]), device,
                              reps=5 if L == long_L else 10)
                    key = f"{L}-{dtype}"
                    if name == "attention":
                        base[key] = t
                    out.append(f"{fmt_ms(t)}" + (f" ({t / base[key]:.2f}x)" if key in base and name != "attention" else ""))
                del layer, x
                if device == "cuda":
                    torch.cuda.empty_cache()
            return out

        guarded(rows, [name], 4, measure)
    report.section(f"Layers: forward + backward, B={B_}, d_model={D_}",
                   ["layer", f"fp32 L={L_} ms", f"bf16 L={L_} ms", f"bf16 L={long_L} ms"], rows, "layers",
                   "In brackets: the time relative to the `attention` layer (SDPA) in the same column.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--skip-build", action="store_true", help="use the extension already built in place")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    p.add_argument("--quick", action="store_true", help="small sizes (for trying the report on a CPU)")
    p.add_argument("--only", default="", help="comma-separated sections: env,reference,peers,layers")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    p.add_argument("pytest_args", nargs="*", help="extra arguments for pytest -m cuda")
    args = p.parse_args(argv)
    global QUICK
    QUICK = args.quick
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); on a CPU use --device cpu --quick", file=sys.stderr)
        return 2
    t_start = time.time()
    report = Report()
    steps = []
    if not args.skip_build:
        steps.append(["build", f"{build(args.device):.0f} s", "ok"])
        # the extension was (re)built after seqzoo may have been imported: load it fresh
        for mod in [m for m in sys.modules if m == "seqzoo" or m.startswith("seqzoo.")]:
            del sys.modules[mod]
    rc = 0
    if not args.skip_tests:
        rc, dt, tail = run_tests(args.pytest_args)
        steps.append(["pytest -m cuda", f"{dt:.0f} s", "passed" if rc == 0 else f"FAILED (exit {rc})"])
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the timings below
    only = set(filter(None, args.only.split(","))) or {"env", "reference", "peers", "layers"}
    sections = [("env", environment), ("reference", kernels_vs_reference), ("peers", kernels_vs_peers), ("layers", layers)]
    for key, fn in sections:
        if key in only:
            t0 = time.time()
            fn(report, args.device) if key == "env" else fn(report, args.device, args.quick)
            steps.append([f"report: {key}", f"{time.time() - t0:.0f} s", "ok"])
    steps.append(["total", f"{time.time() - t_start:.0f} s", ""])
    report.section("Steps", ["step", "time", "result"], steps, "steps")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("# seqzoo GPU check\n\n" + "\n".join(report.parts))
    (args.out / "report.json").write_text(json.dumps(report.data, indent=1))
    print(f"wrote {args.out / 'report.md'} and report.json", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
