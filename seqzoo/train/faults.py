"""What a long run meets besides SIGKILL: a scheduler's notice to stop, and a step whose
loss or gradients are not finite.

**Preemption.** Schedulers send SIGTERM (Slurm, Kubernetes, torchrun's agent) or a
configured signal such as SIGUSR1 (Slurm ``--signal``) some seconds before they kill a
job. :class:`StopSignals` turns either into a flag that the training loop reads at its
next step boundary; the loop then writes a checkpoint and raises :class:`Preempted`, and
the command line exits with :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL`` of sysexits.h:
"try again later", what requeueing wrappers look for; 143 would also be a plain kill).

**Non-finite steps.** :func:`grad_norm` is the global gradient norm (the one
``clip_grad_norm_`` clips by) in one fused pass; it is non-finite exactly when some
gradient is, so the loop learns "is this step finite?" from the loss and this one number,
and reads both in the one device sync per step it already had. Only on a bad step does
:func:`first_nonfinite_grad` walk the parameters to name the culprit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["EXIT_PREEMPTED", "Preempted", "NonFiniteError", "StopSignals", "signal_name", "grad_norm", "clip_grads_",
           "first_nonfinite_grad"]

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; the same command resumes it."""

    def __init__(self, signal_name: str, step: int, checkpoint):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint is not None else "no run folder, nothing saved"
        super().__init__(f"preempted by {signal_name} at step {step}; {where}. "
                         f"Run the same command again to resume (exit status {EXIT_PREEMPTED}).")


class NonFiniteError(RuntimeError):
    """A step's loss or gradients were NaN or infinite (``on_nonfinite: stop``)."""


class StopSignals:
    """Within the ``with`` block, SIGTERM and SIGUSR1 set :attr:`received` (the signal's
    number) instead of ending the process; the previous handlers come back on exit.

    The handler only records the signal (printing from it can collide with a write in
    progress). Python runs signal handlers in the main thread only, so elsewhere (or with
    ``enabled=False``) nothing is installed and :attr:`received` stays 0."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = self.received or signum

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def grad_norm(grads: list[Tensor]) -> Tensor:
    """The L2 norm of all ``grads`` taken as one vector (0-d, float32), as
    ``torch.nn.utils.clip_grad_norm_`` computes it: a fused per-tensor norm, then the norm
    of those. No host sync. (torch >= 2.6 has ``get_total_norm``; seqzoo supports 2.4.)"""
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def clip_grads_(grads: list[Tensor], max_norm: float, total: Tensor) -> None:
    """Scale ``grads`` in place so their norm ``total`` is at most ``max_norm``
    (``clip_grad_norm_``'s rule, with the norm already computed; no host sync)."""
    if grads:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))


def first_nonfinite_grad(named_parameters: Iterable[tuple[str, nn.Parameter]]) -> str | None:
    """The name of the first parameter whose gradient holds a NaN or an infinity."""
    for name, p in named_parameters:
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return name
    return None
