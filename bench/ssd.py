"""SSD (Mamba-2) benchmark: the chunked PyTorch path against SSD as the compiled selective
scan (on a CPU), the loop reference, and an earlier version of itself from git.

    python -m bench.ssd [--batch 2 --length 1024 --heads 8 --head-dim 32 --state 64 --chunk 64]
    python -m bench.ssd --against 58f9005     # also time ssd_chunked as it was at that commit

Forward and forward + backward medians (interleaved, same inputs, fp32 unless --dtype),
on the CPU or with --device cuda. The reference (a loop over L) is timed only at small L.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import median_times, table
from seqzoo import _ext
from seqzoo.ops.ssd import ref, ssd_chunked, ssd_scan

ROOT = Path(__file__).resolve().parent.parent


def _chunked_at(rev: str):
    """``ssd_chunked`` as it was at git revision ``rev`` (loaded from ``git show``)."""
    src = subprocess.run(["git", "show", f"{rev}:seqzoo/ops/ssd/__init__.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"ssd_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"ssd_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ssd_chunked


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--state", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--against", default="", help="a git revision whose ssd_chunked is timed too")
    args = p.parse_args(argv)
    dtype, dev = getattr(torch, args.dtype), args.device
    g = torch.Generator().manual_seed(0)
    B, L, H, P, G, N, Q = args.batch, args.length, args.heads, args.head_dim, args.groups, args.state, args.chunk
    x = torch.randn(B, L, H, P, generator=g).to(dev, dtype)
    dt = (torch.rand(B, L, H, generator=g) * 0.1).to(dev, dtype)
    A = (-torch.rand(H, generator=g) - 0.5).to(dev)
    Bm, Cm = (torch.randn(B, L, G, N, generator=g).to(dev, dtype) for _ in range(2))

    fns = {"chunked": ssd_chunked}
    if dev == "cpu" and _ext.has_kernel("selective_scan", "cpu"):
        fns["scan"] = ssd_scan
    if args.against:
        fns[f"chunked @ {args.against}"] = _chunked_at(args.against)
    if L <= 512:
        fns["reference (loop)"] = ref.ssd

    def run(fn, grad: bool):
        ins = [t.clone().requires_grad_(grad) for t in (x, dt, Bm, Cm)]
        y = fn(ins[0], ins[1], A, ins[2], ins[3], Q)
        if grad:
            y.float().sum().backward()
        if dev == "cuda":
            torch.cuda.synchronize()

    calls = {f"{name} {'fwd+bwd' if grad else 'fwd'}": (lambda fn=fn, grad=grad: run(fn, grad))
             for name, fn in fns.items() for grad in (False, True)}
    times = median_times(calls, repeats=args.repeats)
    rows = [(k, f"{v * 1e3:.1f}", f"{v / times['chunked ' + k.rsplit(' ', 1)[1]]:.2f}x") for k, v in times.items()]
    print(f"SSD B={B} L={L} H={H} P={P} G={G} N={N} chunk={Q} {args.dtype} on {dev}, {torch.get_num_threads()} threads")
    print(table(("what", "ms", "vs chunked"), rows))


if __name__ == "__main__":
    sys.exit(main())
