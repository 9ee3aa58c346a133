"""Gumbel-softmax quantisation: a differentiable sample of one code per position.

Gumbel-max trick (Jang, Gu, Poole 2017, "Categorical Reparameterization with
Gumbel-Softmax", eq. 1; Maddison, Mnih, Teh 2017, "The Concrete Distribution", Prop. 1b):
with g_1..g_K iid Gumbel(0, 1),

    P(argmax_i (l_i + g_i) = k) = softmax(l)_k.

Relaxation (Jang et al. eq. 2; Maddison et al. Def. 1, the "Concrete" distribution):

    y = softmax((l + g) / tau)       a point of the simplex, differentiable in l.

Its argmax is the Gumbel-max sample at every tau (softmax is monotone), and as tau -> 0 it
converges to that one-hot vector (Maddison et al. Prop. 1c). Its *mean* is not softmax(l)
at a finite tau; it tends to softmax(l) only as tau -> 0.

Quantisation, as in DALL-E's dVAE (Ramesh et al. 2021, "Zero-Shot Text-to-Image
Generation", Sec. 2.1 and App. A.2): logits over the K codes from the encoder output
(here one Linear, dim -> K), the quantised vector is y @ E for a learned codebook E (K, dim);

    soft mode   y as above (the relaxed one-hot; all codes mixed, all get gradients)
    hard mode   straight-through Gumbel (Jang et al. Sec. 2.2): the forward value is
                one_hot(argmax y), exactly, so the output is a codebook row; the gradient
                is the soft one's
    eval mode   no noise: ids = argmax_k l_k, output E[ids] (deterministic)

and the prior term of the ELBO with a uniform prior over the codes, per position,

    KL(q || U(K)) = sum_k q_k log q_k + log K,   q = softmax(l),

averaged over real positions and scaled by ``kl_weight`` (DALL-E's beta).

The temperature decays exponentially from ``tau_start`` to a floor ``tau_min`` reached
after ``tau_anneal_steps`` training forwards, then stays there:

    tau(t) = tau_start * (tau_min / tau_start) ** min(t / T, 1)
           = max(tau_min, tau_start * exp(-r t)),   r = log(tau_start / tau_min) / T,

the form of Jang et al. Sec. 4 (tau = max(0.5, exp(-r t))); DALL-E anneals 1 -> 1/16.
The step t is a buffer, counted by training-mode forwards and saved with the weights.

Multi-process training needs nothing special: the codebook and the logits projection are
ordinary parameters (DDP averages their gradients); the usage window counts this
process's codes only, as FSQ's does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.quant.fsq import QuantizerOutput, _check_mask
from seqzoo.quant.metrics import CodebookUsage, code_histogram, perplexity

__all__ = ["GumbelQuantizer", "gumbel_noise", "gumbel_softmax", "kl_to_uniform"]


# ---------------------------------------------------------------------- functions
def gumbel_noise(shape: tuple[int, ...] | torch.Size, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, generator: torch.Generator | None = None) -> Tensor:
    """iid Gumbel(0, 1) samples of ``shape``: -log(-log U) with U ~ Uniform(0, 1), since
    P(-log(-log U) <= x) = P(U <= exp(-e^-x)) = exp(-e^-x), the Gumbel CDF. (Three times
    faster on CPU than -log E with ``exponential_``.) U = 0 is clamped to the smallest
    normal number, so the noise is finite."""
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return -u.clamp_(min=torch.finfo(dtype).tiny).log_().neg_().log_()


def gumbel_softmax(logits: Tensor, tau: float | Tensor, *, hard: bool = False, gumbels: Tensor | None = None) -> Tensor:
    """A relaxed one-hot sample: logits (..., K) -> y (..., K), y = softmax((logits + g) / tau).

    ``hard``: the forward value is one_hot(argmax y) exactly (entries 0 and 1), the gradient
    that of the soft y (straight-through Gumbel-softmax). ``gumbels`` (..., K): the noise g
    to use (default: fresh Gumbel(0, 1) samples).
    """
    if gumbels is None:
        gumbels = gumbel_noise(logits.shape, dtype=logits.dtype, device=logits.device)
    elif gumbels.shape != logits.shape:
        raise ValueError(f"gumbels must have the shape of logits {tuple(logits.shape)}, got {tuple(gumbels.shape)}")
    y = torch.softmax((logits + gumbels) / tau, dim=-1)  # (..., K)
    if not hard:
        return y
    one_hot = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
    # y + (h - y) is exactly h. Where h = 0 it is y - y = 0. Where h = 1: 1 - y is exact if
    # y >= 1/2 (Sterbenz), otherwise fl(1 - y) = 1 - y + e with |e| at most half an ulp of
    # [1/2, 1); then y + fl(1 - y) = 1 + e rounds to 1.
    return y + (one_hot - y).detach()


def kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(softmax(logits) || uniform over K) = sum_k q_k log q_k + log K: (..., K) -> (...)."""
    logq = torch.log_softmax(logits, dim=-1)
    return (logq.exp() * logq).sum(-1) + math.log(logits.shape[-1])


# ---------------------------------------------------------------------- module
class GumbelQuantizer(nn.Module):
    """Gumbel-softmax quantiser over a learned codebook.

    ``GumbelQuantizer(dim, codebook_size)(z, mask)`` with z (B, L, dim), mask (B, L) bool
    (True = real position) -> :class:`~seqzoo.quant.fsq.QuantizerOutput` (quantized
    (B, L, dim), ids (B, L), loss = kl_weight * KL to uniform, stats).

    Options:
        hard              straight-through Gumbel (one-hot forward) instead of the soft mix.
        tau_start, tau_min, tau_anneal_steps
                          exponential decay of the temperature from tau_start to the floor
                          tau_min over that many training steps (0: tau_min from the start).
        kl_weight         weight of the KL-to-uniform prior term.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        hard: bool = False,
        tau_start: float = 1.0,
        tau_min: float = 1.0 / 16,
        tau_anneal_steps: int = 1000,
        kl_weight: float = 1e-2,
        usage_window: int = 100,
    ):
        super().__init__()
        if codebook_size < 2 or dim < 1:
            raise ValueError(f"need dim >= 1 and codebook_size >= 2, got {dim}, {codebook_size}")
        if not 0 < tau_min <= tau_start:
            raise ValueError(f"need 0 < tau_min <= tau_start, got tau_min={tau_min}, tau_start={tau_start}")
        if tau_anneal_steps < 0:
            raise ValueError(f"tau_anneal_steps must be >= 0 (0: tau_min from the start), got {tau_anneal_steps}")
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.hard = hard
        self.tau_start = float(tau_start)
        self.tau_min = float(tau_min)
        self.tau_anneal_steps = int(tau_anneal_steps)
        self.kl_weight = float(kl_weight)
        self.to_logits = nn.Linear(dim, codebook_size)
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))  # E (K, dim), as nn.Embedding's init
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # training forwards so far
        self.usage = CodebookUsage(codebook_size, usage_window)

    # ------------------------------------------------------------------ pieces
    def temperature(self, step: Tensor | int | None = None) -> Tensor:
        """tau at training step ``step`` (default: the current one), a scalar fp32 tensor."""
        t = self.step if step is None else torch.as_tensor(step)
        frac = (t.float() / self.tau_anneal_steps).clamp(max=1.0) if self.tau_anneal_steps else t.new_ones((), dtype=torch.float32)
        return self.tau_start * (self.tau_min / self.tau_start) ** frac

    def logits(self, z: Tensor) -> Tensor:
        """Logits over the codes: z (..., dim) -> (..., K), in at least fp32 (autocast off)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"GumbelQuantizer expects inputs (..., {self.dim}), got {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            dtype = torch.promote_types(torch.promote_types(z.dtype, torch.float32), self.to_logits.weight.dtype)
            return F.linear(z.to(dtype), self.to_logits.weight.to(dtype), self.to_logits.bias.to(dtype))

    def encode(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, L, dim) -> ids (B, L) = argmax of the logits; no noise, updates nothing."""
        return self.logits(z).argmax(-1)

    def decode(self, ids: Tensor) -> Tensor:
        """Token ids (B, L) -> codebook vectors (B, L, dim)."""
        if ids.dtype.is_floating_point:
            raise ValueError(f"ids must be an integer tensor, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ValueError(f"ids must lie in [0, {self.codebook_size}), got [{int(ids.min())}, {int(ids.max())}]")
        return self.codebook[ids.long()]

    # ------------------------------------------------------------------ forward
    def forward(self, z: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """z (B, L, dim), mask (B, L) bool -> QuantizerOutput. Training mode samples (and
        advances the temperature schedule); eval mode takes the argmax."""
        mask = _check_mask(mask, z)
        in_dtype = z.dtype
        logits = self.logits(z)  # (B, L, K)
        with torch.autocast(device_type=z.device.type, enabled=False):
            codebook = self.codebook.to(logits.dtype)
            if self.training:
                tau = self.temperature().to(logits.dtype)
                y = gumbel_softmax(logits, tau, hard=self.hard)  # (B, L, K)
                ids = y.detach().argmax(-1)  # (B, L): the Gumbel-max sample
                out = y @ codebook  # (B, L, dim); exactly codebook[ids] in hard mode
            else:
                tau = self.temperature()
                ids = logits.argmax(-1)
                out = codebook[ids]

            kl = kl_to_uniform(logits)  # (B, L)
            kl = kl.mean() if mask is None else (kl * mask).sum() / mask.sum().clamp(min=1)
            loss = self.kl_weight * kl

        with torch.no_grad():
            counts = code_histogram(ids, self.codebook_size, mask)
            if self.training:
                self.usage.update(ids, counts=counts)
                self.step += 1
            stats = {"kl": kl.detach(), "tau": tau.detach(), "perplexity": perplexity(counts),
                     "usage": self.usage.usage()}
        return QuantizerOutput(out.to(in_dtype), ids, loss, stats)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, hard={self.hard}, "
                f"tau={self.tau_start:g}->{self.tau_min:g} over {self.tau_anneal_steps} steps, "
                f"kl_weight={self.kl_weight:g}")
