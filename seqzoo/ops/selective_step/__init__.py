"""The fused Mamba step (spec: :mod:`.ref`): one token through the whole selective block,
for decoding.

Backends (chosen in :mod:`seqzoo.ops._dispatch`):
    "cpp"  seqzoo's CPU kernel (csrc/selective_step/): the three projections as single
           matrix-vector products and everything between them in two passes over the
           channels, instead of ~15 tensor ops each paying dispatch overhead. float32 and
           float64, without gradients; ``auto`` runs the reference for other dtypes
           (autocast's bf16/fp16 projections) and when a gradient is needed.
    "ref"  the reference, a dozen tensor ops. On a GPU this is the path: CUDA graphs
           (:class:`seqzoo.models.generate.Decoder`) remove the per-op launch cost there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo import _ext
from seqzoo.ops import _dispatch
from seqzoo.ops._checks import check_real_tensors, inference_kernel_takes
from seqzoo.ops.selective_step import ref

if _ext.available():
    from seqzoo.ops.selective_step import _op  # noqa: F401  (registers the fake kernel)

__all__ = ["selective_step", "fused_ok", "run"]

_NAMES = ("x", "conv_state", "ssm_state", "in_proj_weight", "in_proj_bias", "conv_weight", "conv_bias",
          "x_proj_weight", "dt_proj_weight", "dt_bias", "A", "D", "out_proj_weight", "out_proj_bias")


def _check(args: tuple) -> None:
    named = dict(zip(_NAMES, args))
    check_real_tensors("selective_step", named)
    x, conv_state, ssm_state, A, conv_weight, dt_proj_weight = (named[k] for k in (
        "x", "conv_state", "ssm_state", "A", "conv_weight", "dt_proj_weight"))
    if x.dim() != 2 or A.dim() != 2 or conv_weight.dim() != 2 or dt_proj_weight.dim() != 2:
        raise ValueError(
            f"selective_step: x must be (B, Dm), A (E, N), conv_weight (E, W), dt_proj_weight (E, R); got "
            f"{tuple(x.shape)}, {tuple(A.shape)}, {tuple(conv_weight.shape)}, {tuple(dt_proj_weight.shape)}"
        )
    (Bsz, Dm), (E, N), W, R = x.shape, A.shape, conv_weight.shape[1], dt_proj_weight.shape[1]
    want = {"conv_state": (Bsz, E, W - 1), "ssm_state": (Bsz, E, N), "in_proj_weight": (2 * E, Dm),
            "in_proj_bias": (2 * E,), "conv_weight": (E, W), "conv_bias": (E,), "x_proj_weight": (R + 2 * N, E),
            "dt_proj_weight": (E, R), "dt_bias": (E,), "D": (E,), "out_proj_weight": (None, E)}
    for name, shape in want.items():
        t = named[name]
        if t is not None and (t.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape))):
            raise ValueError(
                f"selective_step: {name} must be {tuple('Dout' if s is None else s for s in shape)} "
                f"(B={Bsz}, Dm={Dm}, E={E}, N={N}, W={W}, R={R}), got shape {tuple(t.shape)}"
            )
    b = named["out_proj_bias"]
    if b is not None and tuple(b.shape) != (named["out_proj_weight"].shape[0],):
        raise ValueError(f"selective_step: out_proj_bias must be (Dout,) = ({named['out_proj_weight'].shape[0]},), "
                         f"got {tuple(b.shape)}")


def fused_ok(args: tuple[Tensor | None, ...]) -> bool:
    """Whether the compiled kernel computes what the reference specifies for these inputs
    (:func:`seqzoo.ops._checks.inference_kernel_takes`: all float32 or all float64, no
    autocast, no gradient needed)."""
    return inference_kernel_takes(args)


def selective_step(
    x: Tensor,
    conv_state: Tensor,
    ssm_state: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor | None,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_bias: Tensor,
    A: Tensor,
    D: Tensor,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """One token through the Mamba block (Fig. 3; Algorithm 2 with L = 1): see :mod:`.ref`.

    Args:
        x: (B, Dm).  conv_state: (B, E, W-1), the conv's last inputs.  ssm_state: (B, E, N).
        in_proj_weight: (2E, Dm), bias (2E,) or None.  conv_weight: (E, W), bias (E,) or None.
        x_proj_weight: (R + 2N, E).  dt_proj_weight: (E, R).  dt_bias: (E,).
        A: (E, N) (negative: A = -exp(A_log)).  D: (E,).  out_proj_weight: (Dout, E), bias or None.
        backend: "auto" | "ref" | "cpp".

    Returns:
        ``(out (B, Dout), new conv_state, new ssm_state)``; the inputs are not modified.
    """
    args = (x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias, x_proj_weight,
            dt_proj_weight, dt_bias, A, D, out_proj_weight, out_proj_bias)
    _check(args)
    return run(args, backend)


def run(args: tuple[Tensor | None, ...], backend: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """:func:`selective_step` on already checked arguments (in its order): what a layer that
    built the shapes itself calls once per token, without re-checking them. ``auto`` on a
    device without a kernel runs the reference without the fallback warning other ops give:
    there (a GPU) the reference is the intended path."""
    x, ssm_state = args[0], args[2]
    if backend == "auto" and not _ext.has_kernel("selective_step", x.device.type):
        return ref.selective_step(*args)
    choice = _dispatch.select("selective_step", backend, x.device, x.dtype)
    if choice == "cpp" and not fused_ok(args):
        if backend == "cpp":
            raise ValueError(
                "selective_step: backend='cpp' takes float32 or float64 tensors, all of one dtype, outside "
                f"autocast and without gradients (got x {x.dtype}, ssm_state {ssm_state.dtype}, "
                f"grad {torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)}); "
                "use backend='auto', which runs the reference for those"
            )
        choice = "ref"
    if choice == "ref":
        return ref.selective_step(*args)
    return torch.ops.seqzoo.selective_step(*args)
