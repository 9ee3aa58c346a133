"""The interface every seqzoo mixer keeps.

    y, state = layer(x)                  # x (B, L, D) -> y (B, L, D): parallel form
    y, state = layer(x, state)           # continue from a state (chunked / streaming prefill)
    y, state = layer(x, lengths=lengths) # right-padded batch: lengths (B,) of real tokens
    y_t, state = layer.step(x_t, state)  # x_t (B, D): one token, recurrent form
    state = layer.init_state(batch_size, device=..., dtype=...)

This follows ``nn.LSTM``'s (output, state) convention and S4's ``SequenceModule``. A state
is a ``NamedTuple`` of batch-first tensors (the layer's ``State`` class); ``step`` never
writes in place. The public methods here validate their inputs and give clear errors; a
layer implements the unchecked ``_forward`` / ``_step`` / ``_init_state``.

Class flags say what a layer supports:
    causal           outputs at t depend only on inputs at <= t
    supports_step    has a recurrent form (``step``)
    supports_state   ``forward`` can start from / return a carried state
    supports_lengths understands ``lengths`` for right-padded batches
    state_grows      the state's shape changes from step to step (a KV cache): no fixed
                     buffers, so no CUDA-graph decoding

A layer whose recurrent form is switched off by an option (e.g. ``bidirectional=True``)
reports it through ``step_disabled_reason()``; ``step`` then raises naming that option.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from seqzoo.tracing import is_tracing

__all__ = ["SequenceLayer", "LayerInputError", "is_tracing", "no_autocast", "optim_hint", "ssm_dtype"]


class LayerInputError(ValueError):
    """Bad input to a seqzoo layer (shape, dtype, device, state or lengths)."""


class SequenceLayer(nn.Module):
    """Base class of every registered mixer. Subclasses set ``State`` and implement
    ``_forward(x, state, lengths)``, ``_step(x_t, state)`` and ``_init_state(...)``."""

    # What the layer can do (override in subclasses).
    causal: ClassVar[bool] = True
    supports_step: ClassVar[bool] = True
    supports_state: ClassVar[bool] = True
    supports_lengths: ClassVar[bool] = False
    state_grows: ClassVar[bool] = False
    # Option sets the generated layer tests build this layer with (besides the defaults).
    test_variants: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    # Filled by @register
    registry_name: ClassVar[str] = ""
    State: ClassVar[type] = NamedTuple

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.d_model: int = config.d_model

    # ------------------------------------------------------------------ capabilities
    @property
    def name(self) -> str:
        return self.registry_name or type(self).__name__

    def is_causal(self) -> bool:
        """Causal for this instance (a config option such as bidirectional may turn it off)."""
        return self.causal and self.step_disabled_reason() is None

    def step_disabled_reason(self) -> str | None:
        """Why this instance cannot step (None if it can). ``bidirectional`` (a shared option
        name) disables stepping everywhere; override for other option-dependent cases."""
        if not self.supports_step:
            return f"the {self.name} layer has no recurrent form"
        if getattr(self.config, "bidirectional", False):
            return "built with bidirectional=True, which has no recurrent form; build with bidirectional=False to step"
        return None

    def can_step(self) -> bool:
        return self.step_disabled_reason() is None

    # ------------------------------------------------------------------ public API
    def forward(
        self,
        x: Tensor,
        state: tuple | None = None,
        *,
        lengths: Tensor | None = None,
        return_state: bool = True,
    ) -> tuple[Tensor, tuple | None]:
        """Parallel form. x (B, L, D) -> (y (B, L, D), final state).

        ``state`` continues from a previous call (same layer, same batch size).
        ``lengths`` (B,) marks right padding: positions >= lengths[b] never change outputs
        at real positions, their outputs are zero, and the returned state is the state
        after the last real token of each row.
        ``return_state=False`` returns ``(y, None)`` and lets a layer skip computing the
        final state (training does not need it). An empty sequence (L = 0) returns an
        empty y and the state unchanged (a fresh one if None).
        """
        self._check_x(x, rank=3, what="x")
        if state is not None:
            if not self.supports_state or not self.can_step():
                why = self.step_disabled_reason() or f"the {self.name} layer does not carry state"
                raise LayerInputError(f"{self.name}: forward got a state, but {why}.")
            self._check_state(state, x.shape[0], x)
        if lengths is not None:
            lengths = self._check_lengths(lengths, x)
        if x.shape[1] == 0:  # an empty sequence changes nothing (what nn.LSTM's users expect)
            if state is None and return_state:
                state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
            return x.new_zeros(x.shape), (state if return_state else None)
        y, new_state = self._forward(x, state, lengths, return_state)
        if not return_state:
            new_state = None
        if lengths is not None:
            pad = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]  # (B, L)
            y = y.masked_fill(pad[..., None], 0.0)
        return y, new_state

    def step(self, x_t: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """Recurrent form: one token x_t (B, D) -> (y_t (B, D), new state). Pure: the input
        state is never modified."""
        why = self.step_disabled_reason()
        if why is not None:
            raise NotImplementedError(f"{self.name}.step: {why}.")
        self._check_x(x_t, rank=2, what="x_t")
        if state is None:
            state = self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype)
        else:
            self._check_state(state, x_t.shape[0], x_t)
        return self._step(x_t, state)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple:
        """The state before any token (zeros / an empty cache)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise LayerInputError(f"{self.name}.init_state: batch_size must be a positive int, got {batch_size!r}")
        ref = self._reference_tensor()
        device = torch.device(device) if device is not None else (ref.device if ref is not None else torch.device("cpu"))
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
        return self._init_state(batch_size, device, dtype)

    # ------------------------------------------------------------------ to implement
    def _forward(
        self, x: Tensor, state: tuple | None, lengths: Tensor | None, return_state: bool
    ) -> tuple[Tensor, tuple | None]:
        """Unchecked parallel form; ``lengths`` is None or a validated (B,) long tensor.
        May return None for the state when ``return_state`` is False."""
        raise NotImplementedError

    def _step(self, x_t: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        raise NotImplementedError

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> tuple:
        raise NotImplementedError

    # ------------------------------------------------------------------ caching
    def cached(self, key: Any, fn, deps: tuple[Tensor, ...] | None = None):
        """``fn()``, memoised while the tensors it depends on are unchanged and no gradient is
        being recorded (recurrent inference reuses discretised matrices across steps). With
        autograd on, it recomputes so every graph is fresh; so it does under ``torch.compile``
        (the compiled graph holds the computation: the check below reads tensor metadata
        Dynamo cannot trace). While a CUDA graph is captured the check works as in eager mode,
        so a capture after a warm-up step replays with the cached tensors. ``deps``: the
        parameters/buffers ``fn`` reads (default: all parameters); naming the few it needs
        keeps the check cheap (a decode step pays it for every token)."""
        params = list(self.parameters()) if deps is None else deps
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return fn()
        if torch.compiler.is_compiling():
            return fn()
        sig = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        store = self.__dict__.setdefault("_seqzoo_cache", {})
        hit = store.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        value = fn()
        store[key] = (sig, value)
        return value

    # ------------------------------------------------------------------ precision
    def keep_fp32(self, *names: str) -> None:
        """Name parameters or buffers (dotted, relative to this layer) that module casts
        (``.half()``, ``.to(torch.bfloat16)``) leave in fp32, bit for bit: the SSM parameters
        that a recurrence is sensitive to (A, Δ, decays; mamba #6). In bf16 an S4D-Lin
        frequency π·n ≈ 100 would move by up to 0.25 and a RetNet decay 1 - 2⁻¹² would
        round to 1. Autocast leaves parameters alone anyway; this covers module casts."""
        self._fp32_names = (*getattr(self, "_fp32_names", ()), *names)

    def _fp32_tensors(self) -> dict[str, Tensor]:
        """name -> the tensor (parameter or buffer) that :meth:`keep_fp32` named."""
        out = {}
        for name in getattr(self, "_fp32_names", ()):
            mod_name, _, leaf = name.rpartition(".")
            mod = self.get_submodule(mod_name)
            t = mod._parameters.get(leaf) if leaf in mod._parameters else mod._buffers.get(leaf)
            if t is not None:
                out[name] = t
        return out

    def _apply(self, fn, recurse=True):
        # the kept tensors' values before the cast (.data: the storage, not the Parameter,
        # whose .data the cast replaces), restored on the cast's device if it lowered them
        before = {n: t.data for n, t in self._fp32_tensors().items()}
        self.__dict__.pop("_seqzoo_ref", None)  # the reference tensor may change (see _reference_tensor)
        super()._apply(fn, recurse)
        for name, after in self._fp32_tensors().items():
            if after.dtype in (torch.float16, torch.bfloat16) and before[name].dtype not in (torch.float16, torch.bfloat16):
                value = before[name].to(device=after.device)
                if isinstance(after, nn.Parameter):
                    after.data = value
                else:
                    mod_name, _, leaf = name.rpartition(".")
                    self.get_submodule(mod_name)._buffers[leaf] = value
        return self

    # ------------------------------------------------------------------ validation
    def _reference_tensor(self) -> Tensor | None:
        """The parameter whose device and dtype inputs are checked against: the first
        floating-point one that module casts reach (not one kept in fp32). Found once and
        kept until the next module cast (``_apply``), which may replace parameters; its
        device and dtype are read at each check."""
        hit = self.__dict__.get("_seqzoo_ref")
        if hit is not None:
            return hit[0]
        kept = {id(t) for t in self._fp32_tensors().values()}
        ref = next((p for p in self.parameters() if p.is_floating_point() and id(p) not in kept), None)
        self.__dict__["_seqzoo_ref"] = (ref,)
        return ref

    def _check_x(self, x: Any, *, rank: int, what: str) -> None:
        shape = "(B, L, D)" if rank == 3 else "(B, D)"
        if not isinstance(x, Tensor):
            raise LayerInputError(f"{self.name}: {what} must be a torch.Tensor {shape}, got {type(x).__name__}")
        if x.dim() != rank:
            hint = " (for one token use layer.step)" if rank == 3 and x.dim() == 2 else ""
            hint = " (for a sequence use layer(x))" if rank == 2 and x.dim() == 3 else hint
            raise LayerInputError(f"{self.name}: {what} must be {shape}, got shape {tuple(x.shape)}{hint}")
        if x.shape[-1] != self.d_model:
            raise LayerInputError(
                f"{self.name}: {what} has width {x.shape[-1]} but the layer was built with d_model={self.d_model}"
            )
        if not x.is_floating_point():
            raise LayerInputError(
                f"{self.name}: {what} must be floating point, got {x.dtype} (token ids go through an embedding first)"
            )
        ref = self._reference_tensor()
        if ref is not None:
            if x.device != ref.device:
                raise LayerInputError(
                    f"{self.name}: {what} is on {x.device} but the layer's parameters are on {ref.device}; "
                    f"move one of them (layer.to({str(x.device)!r}) or {what}.to({str(ref.device)!r}))"
                )
            if x.dtype != ref.dtype and not _autocast_on(x.device):
                raise LayerInputError(
                    f"{self.name}: {what} has dtype {x.dtype} but the layer's parameters are {ref.dtype}; "
                    f"cast one of them (layer.to({x.dtype}) or {what}.to({ref.dtype})), or run under torch.autocast"
                )

    def _check_state(self, state: Any, batch_size: int, x: Tensor) -> None:
        expected = type(self).State
        if not isinstance(state, expected):
            raise LayerInputError(
                f"{self.name}: state is a {type(state).__name__}, expected {expected.__name__} "
                f"(from {self.name}.init_state, a previous forward or step of this layer)"
            )
        for field, t in zip(state._fields, state):
            if not isinstance(t, Tensor):
                continue
            if t.dim() == 0 or t.shape[0] != batch_size:
                raise LayerInputError(
                    f"{self.name}: state.{field} has batch size {t.shape[0] if t.dim() else '()'} "
                    f"but the input has batch size {batch_size}; states are batch-first and belong to one batch"
                )
            if t.device != x.device:
                raise LayerInputError(f"{self.name}: state.{field} is on {t.device} but the input is on {x.device}")
        self._check_state_shapes(state)

    def _check_state_shapes(self, state: tuple) -> None:
        """Compare each state tensor's non-batch shape with a fresh state's; layers whose
        state grows (KV caches) override this."""
        want_shapes = self.__dict__.get("_seqzoo_state_shapes")
        if want_shapes is None:  # from the options alone: computed once
            fresh = self._init_state(1, torch.device("meta"), torch.float32)
            want_shapes = self.__dict__["_seqzoo_state_shapes"] = tuple(
                t.shape[1:] if isinstance(t, Tensor) else None for t in fresh
            )
        for field, got, want in zip(state._fields, state, want_shapes):
            if isinstance(got, Tensor) and want is not None and got.shape[1:] != want:
                raise LayerInputError(
                    f"{self.name}: state.{field} has shape {tuple(got.shape)}, expected (B, "
                    f"{', '.join(map(str, want))}); is it from a layer with other options?"
                )

    def _check_lengths(self, lengths: Any, x: Tensor) -> Tensor:
        if not self.supports_lengths:
            raise LayerInputError(
                f"{self.name}: does not support `lengths` (right-padded batches); "
                "run the sequences unpadded or group them by length"
            )
        if not isinstance(lengths, Tensor):
            lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != x.shape[0]:
            raise LayerInputError(
                f"{self.name}: lengths must be (B,) = ({x.shape[0]},), got shape {tuple(lengths.shape)}"
            )
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise LayerInputError(f"{self.name}: lengths must be an integer tensor, got {lengths.dtype}")
        lengths = lengths.to(device=x.device, dtype=torch.long)
        if lengths.numel() and not is_tracing() and (int(lengths.min()) < 0 or int(lengths.max()) > x.shape[1]):
            raise LayerInputError(
                f"{self.name}: lengths must lie in [0, L={x.shape[1]}], got min {int(lengths.min())}, "
                f"max {int(lengths.max())}"
            )
        return lengths

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}"


def _autocast_on(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # older torch: no device argument
        return torch.is_autocast_enabled()


def optim_hint(param: nn.Parameter, **hints: Any) -> nn.Parameter:
    """Attach optimiser hints to a parameter (S4's convention): e.g. ``lr=1e-3,
    weight_decay=0.0`` for SSM parameters. The training harness builds parameter groups
    from ``param._optim``."""
    param._optim = {**getattr(param, "_optim", {}), **hints}
    return param


def ssm_dtype(x: Tensor) -> torch.dtype:
    """The real dtype SSM arithmetic runs in for input ``x``: at least fp32 (bf16/fp16
    inputs under autocast are computed in fp32), fp64 stays fp64."""
    return torch.promote_types(x.dtype, torch.float32)


def no_autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A region where autocast is off for ``device``'s type. SSM arithmetic (discretisation,
    kernels, FFT convolutions, scans, state updates) runs inside one, on inputs cast to
    :func:`ssm_dtype`, so that autocast cannot silently move a matmul of it into bf16/fp16
    (the anchors' pattern: the SSM in fp32 or complex64 whatever the input dtype, the result
    cast back; projections around it stay under autocast)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)
