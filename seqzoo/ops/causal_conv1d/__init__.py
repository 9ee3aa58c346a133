"""Causal depthwise conv1d and its one-step update (spec: :mod:`.ref`), with the signature
of the ``causal-conv1d`` package.

Backends (chosen in :mod:`seqzoo.ops._dispatch`):
    "cpp"            seqzoo's CPU kernel (csrc/causal_conv1d/), forward and backward.
    "cuda"           seqzoo's CUDA kernel (csrc/causal_conv1d/causal_conv1d_cuda.cu): reads
                     x in its layout (a transposed (B, L, D) view is not copied) and fp16/bf16
                     x as such, computes in fp32.
    "causal_conv1d"  the ``causal-conv1d`` package's CUDA kernels (the ``cuda`` extra),
                     preferred by ``auto`` on a GPU when it is ready, for widths 2-4.
    "ref"            the reference (the loop over the W taps).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo import _ext
from seqzoo.ops import _dispatch
from seqzoo.ops._checks import check_real_tensors
from seqzoo.ops.causal_conv1d import ref

if _ext.available():
    from seqzoo.ops.causal_conv1d import _op  # noqa: F401  (registers fake + autograd)

__all__ = ["causal_conv1d", "causal_conv1d_update"]

_ACTIVATIONS = (None, "silu", "swish")
def _load_package():
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update

    return causal_conv1d_fn, causal_conv1d_update


def _probe_package(kernels, device: torch.device) -> None:
    """A tiny forward and update on ``device``, checked against the reference."""
    fn, update = kernels
    g = torch.Generator().manual_seed(0)
    x, w, b, s = (torch.randn(*shape, generator=g).to(device) for shape in ((1, 8, 16), (8, 4), (8,), (1, 8, 3)))
    errs = [fn(x, w, b, activation="silu") - ref.causal_conv1d(x, w, b, activation="silu"),
            update(x[..., 0], s.clone(), w, b, "silu") - ref.causal_conv1d_update(x[..., 0], s, w, b, "silu")[0]]
    err = max(float(e.abs().max()) for e in errs)
    if not err < 1e-3:
        raise RuntimeError(f"its output differs from the reference by {err:.1e}")


_dispatch.register_extra_backend(
    "causal_conv1d", "causal_conv1d", ("cuda",), _load_package, probe=_probe_package, preferred=True,
    package="causal_conv1d",
    install="pip install --no-build-isolation causal-conv1d (or seqzoo[cuda]) on a machine with a CUDA toolkit, torch installed first",
    dtypes=(torch.float32, torch.float16, torch.bfloat16),
)
# the package's kernels take widths 2 to 4 only; auto uses seqzoo's own for other widths
_PACKAGE_WIDTHS = (2, 3, 4)


def _check(x: Tensor, weight: Tensor, bias, state, activation, *, state_name: str, step: bool) -> None:
    fn = "causal_conv1d_update" if step else "causal_conv1d"
    check_real_tensors(fn, {"x": x, "weight": weight, "bias": bias, state_name: state})
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{fn}: activation must be one of None, 'silu', 'swish', got {activation!r}")
    want = "(B, D)" if step else "(B, D, L)"
    if x.dim() != (2 if step else 3):
        raise ValueError(f"{fn}: x must be {want}, got shape {tuple(x.shape)}")
    B, D = x.shape[:2]
    if weight.dim() != 2 or weight.shape[0] != D or weight.shape[1] < 1:
        raise ValueError(f"{fn}: weight must be (D, W) with D = {D}, got shape {tuple(weight.shape)}")
    W = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(f"{fn}: bias must be (D,) = ({D},), got shape {tuple(bias.shape)}")
    if state is not None and tuple(state.shape) != (B, D, W - 1):
        raise ValueError(f"{fn}: {state_name} must be (B, D, W-1) = {(B, D, W - 1)}, got shape {tuple(state.shape)}")


def _choose(backend: str, device: torch.device, dtype: torch.dtype, width: int) -> str:
    choice = _dispatch.select("causal_conv1d", backend, device, dtype)
    if choice == "causal_conv1d" and width not in _PACKAGE_WIDTHS:
        if backend == "causal_conv1d":
            raise ValueError(f"causal_conv1d: the causal-conv1d package takes widths 2-4, got {width}; use backend='auto'")
        own = _dispatch.compiled_name(device.type)
        choice = _dispatch.select("causal_conv1d", own if _ext.has_kernel("causal_conv1d", device.type) else "ref", device)
    return choice


def _compute_dtype(*ts) -> torch.dtype:
    dtype = torch.float32
    for t in ts:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _native_half(x: Tensor, weight: Tensor, bias: Tensor | None, initial_states: Tensor | None) -> bool:
    """fp16/bf16 x that the CUDA kernel takes as it is: the state (if any) in x's dtype (an
    fp32 state would otherwise be rounded) and parameters in x's dtype or fp32."""
    half = (torch.float16, torch.bfloat16)
    return (
        x.dtype in half
        and (initial_states is None or initial_states.dtype == x.dtype)
        and all(t is None or t.dtype in (x.dtype, torch.float32) for t in (weight, bias))
    )


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
    activation: str | None = None,
    *,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Causal depthwise conv1d: ``y_t = bias + Σ_k weight[:, k] · xp[:, t+k]`` with
    ``xp = [initial_states | x]``, then SiLU if ``activation`` is "silu"/"swish".

    Args:
        x: (B, D, L).  weight: (D, W).  bias: (D,).
        initial_states: (B, D, W-1), the W-1 inputs before x (zeros if None).
        return_final_states: also return the last W-1 inputs (B, D, W-1), the state to
            continue from.
        backend: "auto" | "ref" | "cpp" | "cuda" | "causal_conv1d".

    Returns:
        out (B, D, L) in x's dtype [, final_states (B, D, W-1) in x's dtype].
    """
    _check(x, weight, bias, initial_states, activation, state_name="initial_states", step=False)
    choice = _choose(backend, x.device, x.dtype, weight.shape[1])
    if choice == "ref":
        return ref.causal_conv1d(x, weight, bias, initial_states, return_final_states, activation)
    if choice == "causal_conv1d":
        fn, _ = _dispatch.extra_kernel("causal_conv1d", "causal_conv1d", x.device)
        if initial_states is not None or return_final_states:
            # the package carries states only for channel-last x (stride 1 over channels)
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
            if initial_states is not None:
                initial_states = initial_states.transpose(1, 2).contiguous().transpose(1, 2)
        return fn(x, weight, bias, None, initial_states, return_final_states, None, activation)

    if choice == "cuda" and _native_half(x, weight, bias, initial_states):
        # the CUDA kernel reads and writes fp16/bf16 x as such (no fp32 copies of x and out);
        # weight and bias stay in x's dtype or fp32 (a module's parameters under autocast)
        pdtype = x.dtype if weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype) else torch.float32
        x_, w_, b_, s_ = x, weight.to(pdtype), None if bias is None else bias.to(pdtype), initial_states
    else:
        dtype = _compute_dtype(x, weight, bias, initial_states)
        x_, w_, b_, s_ = (None if t is None else t.to(dtype) for t in (x, weight, bias, initial_states))
    out, final = torch.ops.seqzoo.causal_conv1d(x_, w_, b_, s_, activation is not None)
    out = out.to(x.dtype)
    return (out, final.to(x.dtype)) if return_final_states else out


def causal_conv1d_update(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    *,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """One recurrent step of :func:`causal_conv1d`: x (B, D), conv_state (B, D, W-1) ->
    ``(out (B, D), new_conv_state (B, D, W-1))``. Pure: ``conv_state`` is not modified
    (the package's update writes in place, so it gets a copy)."""
    _check(x, weight, bias, conv_state, activation, state_name="conv_state", step=True)
    choice = _choose(backend, x.device, x.dtype, weight.shape[1])
    if choice == "ref":
        return ref.causal_conv1d_update(x, conv_state, weight, bias, activation)
    if choice == "causal_conv1d":
        _, update = _dispatch.extra_kernel("causal_conv1d", "causal_conv1d", x.device)
        new_state = conv_state.clone()
        return update(x, new_state, weight, bias, activation), new_state
    out, new_state = causal_conv1d(x[..., None], weight, bias, conv_state, True, activation, backend=choice)
    return out[..., 0], new_state
