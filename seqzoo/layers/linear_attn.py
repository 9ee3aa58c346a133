"""Multi-head causal linear attention with a choice of feature maps, optional RoPE and
optional decay.

Paper: Katharopoulos, Vyas, Pappas, Fleuret, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention" (ICML 2020), https://arxiv.org/abs/2006.16236, §3.2-3.4:

    y_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t,   S_t = γ S_{t-1} + φ(k_t) v_tᵀ,   z_t = γ z_{t-1} + φ(k_t)

(γ = 1 without decay). Feature maps: :mod:`seqzoo.modules.feature_maps` (``elu1``,
``relu``, ``performer`` = FAVOR+). Decay (``decay``): ``fixed`` (one γ for all heads),
``retnet`` (γ_h = 1 - 2^(-5-h), RetNet's multi-scale retention, Sun et al. 2023, §2.2),
``learned`` (γ_h = sigmoid(θ_h), initialised at the RetNet values).

RoPE (RoFormer, Su et al. 2021, §3.4.3): with a linear attention, the rotation is
applied to the *features* φ(q), φ(k) in the numerator only, and the denominator keeps the
unrotated features, so it stays positive:

    y_t = Σ_s (R_t φ(q_t))ᵀ (R_s φ(k_s)) v_s / Σ_s φ(q_t)ᵀ φ(k_s).

Both sums are linear attentions, so the layer runs the op twice (numerator with values,
denominator with a ones column). Parallel form: the chunked op
(:func:`seqzoo.ops.linear_attn.chunk`); recurrent form: its one-step RNN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import SequenceLayer, optim_hint, ssm_dtype
from seqzoo.modules.feature_maps import build_feature_map
from seqzoo.modules.rope import apply_rope, rope_cos_sin
from seqzoo.ops.linear_attn import chunk, recurrent
from seqzoo.registry import register

EPS = 1e-6


def retnet_gammas(n_heads: int) -> Tensor:
    """RetNet's per-head decays γ_h = 1 - 2^(-5-h), h = 0..H-1 (float64)."""
    return 1.0 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64))


def rotate(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """RoPE on features x (B, H, L, F) at integer positions (B, L) or (1, L)."""
    cos, sin = rope_cos_sin(positions, x.shape[-1], base, dtype=x.dtype)  # (B|1, L, F/2)
    return apply_rope(x, cos[:, None], sin[:, None])


@dataclass
class LinearAttnConfig:
    d_model: int
    n_heads: int = 4
    head_dim: int | None = None  # default d_model // n_heads
    feature_map: Literal["elu1", "relu", "performer"] = "elu1"
    n_features: int | None = None  # performer: random features per head (default head_dim)
    redraw_interval: int = 0  # performer: redraw the features every N training forwards (0: never)
    rope: bool = False
    rope_base: float = 10000.0
    decay: Literal["none", "fixed", "retnet", "learned"] = "none"
    gamma: float = 0.99  # the decay for decay="fixed"
    normalize: bool = True  # divide by φ(q)·z (False: the numerator only)
    chunk_size: int = 64
    bias: bool = False

    def __post_init__(self):
        if self.head_dim is None:
            if self.n_heads < 1 or self.d_model % self.n_heads:
                raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model} (or set head_dim)")
            self.head_dim = self.d_model // self.n_heads
        if self.n_heads < 1 or self.head_dim < 1:
            raise ValueError(f"n_heads and head_dim must be >= 1, got {self.n_heads}, {self.head_dim}")
        if self.n_features is not None and self.feature_map != "performer":
            raise ValueError(f"n_features is the performer's random-feature count; feature_map={self.feature_map!r} keeps head_dim")
        if self.n_features is not None and self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        n_feat = self.n_features or self.head_dim
        if self.rope and n_feat % 2:
            raise ValueError(f"RoPE rotates feature pairs: the feature size ({n_feat}) must be even; change head_dim/n_features or set rope=False")
        if self.redraw_interval < 0:
            raise ValueError(f"redraw_interval must be >= 0 (0: never), got {self.redraw_interval}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


class LinearAttnState(NamedTuple):
    S: Tensor  # (B, H, F, head_dim): Σ decayed (rotated) φ(k) vᵀ
    z: Tensor  # (B, H, F): Σ decayed φ(k), the normaliser ((B, H, 0) when normalize=False)
    pos: Tensor  # (B,) long: tokens seen (RoPE positions)


@register("linear_attn", config=LinearAttnConfig)
class LinearAttention(SequenceLayer):
    """Causal linear attention (elu1 / relu / performer features, optional RoPE and decay).
    x (B, L, D) -> y (B, L, D); state = (S, z, pos)."""

    supports_lengths = True
    State = LinearAttnState
    test_variants = (
        {},
        {"feature_map": "performer", "n_features": 8, "rope": True, "decay": "retnet", "chunk_size": 4, "n_heads": 2},
        {"feature_map": "relu", "decay": "learned", "chunk_size": 8, "normalize": False},
        {"rope": True, "decay": "fixed", "gamma": 0.9, "chunk_size": 5, "head_dim": 6},
    )

    def __init__(self, config: LinearAttnConfig):
        super().__init__(config)
        H, d = config.n_heads, config.head_dim
        self.n_heads, self.head_dim = H, d
        self.qkv = nn.Linear(config.d_model, 3 * H * d, bias=config.bias)
        self.out = nn.Linear(H * d, config.d_model, bias=config.bias)
        self.fmap = build_feature_map(config.feature_map, d, n_features=config.n_features, redraw_interval=config.redraw_interval)
        self.n_feat = self.fmap.out_dim
        if config.decay == "retnet":
            self.register_buffer("gammas", retnet_gammas(H).float())
            self.keep_fp32("gammas")  # 1 - 2⁻¹² rounds to 1 in bf16
        elif config.decay == "learned":
            g = retnet_gammas(H)
            self.decay_logit = optim_hint(nn.Parameter(torch.log(g / (1 - g)).float()), weight_decay=0.0)
            self.keep_fp32("decay_logit")

    # ---------------------------------------------------------------- pieces
    def _gamma(self, dtype: torch.dtype) -> float | Tensor | None:
        """The decay per head: None, a float, or (H,)."""
        kind = self.config.decay
        if kind == "none":
            return None
        if kind == "fixed":
            return self.config.gamma
        if kind == "retnet":
            return self.gammas.to(dtype)
        return torch.sigmoid(self.decay_logit.to(dtype))

    def features(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, L, D), positions (B, L) or (1, L) -> (numerator q, numerator k, denominator q,
        denominator k, v), each (B, H, L, F) (v: (B, H, L, head_dim)), in ssm_dtype(x).
        Without RoPE the numerator and denominator features are the same tensors."""
        dtype = ssm_dtype(x)
        # one copy into (3, B, H, L, d) order, so that the op's matmuls need no further copies
        q, k, v = rearrange(self.qkv(x).to(dtype), "b l (three h d) -> three b h l d", three=3, h=self.n_heads).contiguous()
        fq, fk = self.fmap(q, is_query=True), self.fmap(k, is_query=False)  # (B, H, L, F)
        if not self.config.rope:
            return fq, fk, fq, fk, v
        base = self.config.rope_base
        return rotate(fq, positions, base), rotate(fk, positions, base), fq, fk, v

    def _attend(self, x: Tensor, state: LinearAttnState | None, lengths: Tensor | None, form, want_state: bool = True):
        """Both forms: ``form`` is the op's chunk or recurrent function. ``state`` None: start
        from zeros (and skip adding a zero initial state)."""
        B, L, _ = x.shape
        positions = torch.arange(L, device=x.device)[None]  # (1, L): the same for every row
        if state is not None:
            positions = state.pos[:, None] + positions  # (B, L)
        nq, nk, dq, dk, v = self.features(x, positions)
        gamma = self._gamma(v.dtype)
        n_real = torch.full((B,), L, device=x.device, dtype=torch.long) if lengths is None else lengths
        if lengths is not None:  # padding: no key enters the state, and no decay happens
            valid = (torch.arange(L, device=x.device)[None, :] < lengths[:, None])[:, None, :, None]  # (B, 1, L, 1)
            nk, dk = nk * valid, dk * valid
            if gamma is not None:
                g = torch.as_tensor(gamma, dtype=v.dtype, device=x.device).reshape(-1)[None, :, None]  # (1, H|1, 1)
                gamma = torch.where(valid[..., 0], g, torch.ones((), dtype=v.dtype, device=x.device)).expand(B, self.n_heads, L)
        S = z = None
        if state is not None:
            S, z = state.S.to(v.dtype), state.z.to(v.dtype)
        opts = dict(decay=gamma, chunk_size=self.config.chunk_size, output_final_state=want_state)
        if self.config.normalize and not self.config.rope:
            Sz = None if S is None else torch.cat([S, z[..., None]], -1)
            o, Sz = form(nq, nk, v, normalize=True, initial_state=Sz, eps=EPS, **opts)
            if want_state:
                S, z = Sz[..., :-1], Sz[..., -1]
        else:
            o, S = form(nq, nk, v, normalize=False, initial_state=S, **opts)
            if self.config.normalize:  # RoPE: the denominator with unrotated features
                z0 = None if z is None else z[..., None]
                den, z = form(dq, dk, v.new_ones(B, self.n_heads, L, 1), normalize=False, initial_state=z0, **opts)
                o = o / (den + EPS)
                z = z[..., 0] if want_state else None
            elif want_state and z is None:
                z = v.new_zeros(B, self.n_heads, 0)
        y = self.out(rearrange(o, "b h l d -> b l (h d)").to(x.dtype))
        pos = n_real.long() if state is None else state.pos + n_real
        return y, LinearAttnState(S, z, pos) if want_state else None

    # ---------------------------------------------------------------- forms
    def _forward(self, x, state, lengths, return_state):
        if self.training:
            self.fmap.maybe_redraw()
        return self._attend(x, state, lengths, chunk, want_state=return_state)

    def _step(self, x_t, state):
        y, state = self._attend(x_t[:, None], state, None, recurrent)
        return y[:, 0], state

    def _init_state(self, batch_size, device, dtype):
        H, F, d = self.n_heads, self.n_feat, self.head_dim
        dtype = torch.promote_types(dtype, torch.float32)
        return LinearAttnState(
            torch.zeros(batch_size, H, F, d, device=device, dtype=dtype),
            torch.zeros(batch_size, H, F if self.config.normalize else 0, device=device, dtype=dtype),
            torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, n_heads={c.n_heads}, head_dim={c.head_dim}, feature_map={c.feature_map!r}, "
            f"rope={c.rope}, decay={c.decay!r}, normalize={c.normalize}, chunk_size={c.chunk_size}"
        )


__all__ = ["LinearAttention", "LinearAttnConfig", "LinearAttnState", "retnet_gammas", "rotate"]
