"""The decode step's linear layers: ``seqzoo.ops.matvec`` (csrc/gemv.h) against
``F.linear`` (BLAS) for the few rows of a decode step, in one process.

    python -m bench.matvec [--d-model 256 --rows 1,2,4,8,16 --repeats 7]

Two settings per row count: "hot", one weight matrix called again and again (it stays in
the core's caches), and "cold", a cycle through distinct matrices of the same shape that
together exceed the last-level cache (64 MB), as a decode step meets its weights: each call
then streams its matrix from memory. Columns: microseconds per call and the GB/s of the
weight read (O·I·4 bytes per call). "matvec" is what a layer's step calls
(``seqzoo.ops.matvec.run``); the kernel hands more than 4 rows to BLAS, so from 8 rows on
both columns run the same product.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.common import median_times, table
from seqzoo import _ext
from seqzoo.ops.matvec import run as matvec_run


def _per_call(x: torch.Tensor, cycle: list[torch.Tensor], repeats: int, n: int = 50) -> dict[str, float]:
    """Seconds per call of each product, hot (cycle[0] again and again) and cold (the cycle)."""
    pos = [0]

    def cold(fn):
        def run():
            for _ in range(n):
                pos[0] = (pos[0] + 1) % len(cycle)
                fn(x, cycle[pos[0]])
        return run

    def hot(fn):
        return lambda: [fn(x, cycle[0]) for _ in range(n)]

    fns = {"F.linear hot": hot(F.linear), "matvec hot": hot(matvec_run),
           "F.linear cold": cold(F.linear), "matvec cold": cold(matvec_run)}
    with torch.inference_mode():
        return {k: v / n for k, v in median_times(fns, repeats=repeats).items()}


def bench_matvec(d_model: int, rows: list[int], repeats: int) -> str:
    if not _ext.has_kernel("matvec", "cpu"):
        return "seqzoo._C has no matvec kernel (extension not built): nothing to compare"
    shapes = [(4 * d_model, d_model), (d_model, 2 * d_model)]  # in_proj / MLP fc, out_proj / MLP proj
    out = []
    for O, I in shapes:
        nbytes = O * I * 4
        cycle = [torch.randn(O, I) for _ in range(max(2, (64 << 20) // nbytes))]
        for B in rows:
            t = _per_call(torch.randn(B, I), cycle, repeats)
            out.append((f"{O}x{I}", B, *(f"{1e6 * v:.1f}" for v in t.values()),
                        f"{nbytes / t['matvec cold'] / 1e9:.1f}", f"{t['F.linear cold'] / t['matvec cold']:.2f}x"))
    header = ("weight", "rows", "F.linear hot µs", "matvec hot µs", "F.linear cold µs", "matvec cold µs",
              "matvec cold GB/s", "cold speed-up")
    return f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32\n\n" + table(header, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--rows", default="1,2,4,8,16")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(bench_matvec(args.d_model, [int(r) for r in args.rows.split(",")], args.repeats))


if __name__ == "__main__":
    main()
