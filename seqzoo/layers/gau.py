"""GAU / FLASH: the gated attention unit with mixed-chunk attention.

Paper: Hua, Dai, Liu, Le, "Transformer Quality in Linear Time" (ICML 2022),
https://arxiv.org/abs/2202.10447.

Gated attention unit (§2): one shared head.

    u = SiLU(x W_u), v = SiLU(x W_v)          (B, L, e),  e = expand · d_model
    z = SiLU(x W_z)                           (B, L, s),  s = head_dim (the paper's 128)
    q_quad, k_quad, q_lin, k_lin = z ⊙ γ_i + β_i        (cheap per-dim scale and offset)
    y = (u ⊙ (V̂_quad + V̂_lin)) W_o

Mixed-chunk attention (§3.2), causal, on absolute chunks of C tokens (chunk g = positions
[gC, (g+1)C)):

    V̂_quad[t] = Σ_{s in chunk(t), s≤t} relu²(q_quad[t]·k_quad[s] / C + b[t-s]) v[s]   (squared ReLU inside the chunk)
    V̂_lin[t]  = q_lin[t]ᵀ Σ_{s in earlier chunks} k_lin[s] v[s]ᵀ / C                    (linear attention across chunks)

The 1/C scalings follow the paper's pseudo-code (they are folded into the queries' scale
and offset); b is a learned bias per in-chunk offset (``rel_pos_bias``); RoPE (``rope``)
rotates all four q/k streams by absolute position (RoFormer's adjacent-pair layout).

Recurrent form: the running cross-chunk state S = Σ k_lin vᵀ over completed chunks, plus
the current chunk's keys and values; when a chunk completes it is folded into S.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import SequenceLayer, ssm_dtype
from seqzoo.modules.blocks import splice, take_rows, unsplice
from seqzoo.modules.rope import rope_cos_sin
from seqzoo.registry import register
from seqzoo.tracing import is_tracing


def rope_adjacent_pairs(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """RoPE with RoFormer's own layout (eq. (34): features 2i and 2i+1 form a pair rotated by
    m·θ_i), as one complex multiplication: x (B, L, G, s), positions (B or 1, L). GAU's queries
    and keys are internal, so it can use this layout, which is a single pass over x (the
    rotate-half layout of :mod:`seqzoo.modules.rope` takes several)."""
    B, L, G, s = x.shape
    cos, sin = rope_cos_sin(positions, s, base, dtype=x.dtype)  # (B|1, L, s/2)
    xc = torch.view_as_complex(x.reshape(B, L, G, s // 2, 2))
    return torch.view_as_real(xc * torch.complex(cos, sin)[:, :, None]).reshape(B, L, G, s)


@dataclass
class GAUConfig:
    d_model: int
    expand: int = 2  # e = expand * d_model: width of u and v
    head_dim: int = 128  # s: the shared query/key size
    chunk_size: int = 256  # C
    rope: bool = True
    rope_base: float = 10000.0
    rel_pos_bias: bool = True  # a learned bias per offset inside a chunk
    bias: bool = False

    def __post_init__(self):
        if self.expand < 1 or self.head_dim < 1 or self.chunk_size < 1:
            raise ValueError(f"expand, head_dim and chunk_size must be >= 1, got {self.expand}, {self.head_dim}, {self.chunk_size}")
        if self.rope and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}; change it or set rope=False")


class GAUState(NamedTuple):
    S: Tensor  # (B, s, e): Σ k_lin vᵀ over the completed chunks
    kq_buf: Tensor  # (B, C, s): quadratic keys of the current chunk so far (RoPE applied)
    kl_buf: Tensor  # (B, C, s): linear keys of the current chunk so far
    v_buf: Tensor  # (B, C, e): values of the current chunk so far
    pos: Tensor  # (B,) long: tokens seen


@register("gau", config=GAUConfig)
class GAU(SequenceLayer):
    """Gated attention unit with FLASH's mixed-chunk attention (one shared head).
    x (B, L, D) -> y (B, L, D); state = cross-chunk sum + current chunk."""

    supports_lengths = True
    State = GAUState
    test_variants = (
        {"head_dim": 8, "chunk_size": 4},
        {"head_dim": 6, "chunk_size": 8, "rope": False, "expand": 1},
        {"head_dim": 8, "chunk_size": 5, "rel_pos_bias": False},
    )

    def __init__(self, config: GAUConfig):
        super().__init__(config)
        D, s, C = config.d_model, config.head_dim, config.chunk_size
        self.e, self.s = config.expand * D, s
        self.proj = nn.Linear(D, 2 * self.e + s, bias=config.bias)  # -> u, v, z
        self.gamma = nn.Parameter(1.0 + 0.02 * torch.randn(4, s))  # q_quad, k_quad, q_lin, k_lin
        self.beta = nn.Parameter(torch.zeros(4, s))
        self.rel_bias = nn.Parameter(torch.zeros(C)) if config.rel_pos_bias else None
        self.out = nn.Linear(self.e, D, bias=config.bias)

    def _streams(self, x: Tensor, positions: Tensor) -> tuple[Tensor, ...]:
        """x (B, L, D), positions (B, L) -> u, v (B, L, e) and q_quad, k_quad, q_lin, k_lin
        (B, L, s), all in ssm_dtype(x). The queries carry the 1/C factor."""
        dtype = ssm_dtype(x)
        h = self.proj(x).to(dtype)
        u, v, z = F.silu(h, inplace=not (torch.is_grad_enabled() and h.requires_grad)).split([self.e, self.e, self.s], dim=-1)
        C = self.config.chunk_size
        scale = torch.tensor([1.0 / C, 1.0, 1.0 / C, 1.0], dtype=dtype, device=x.device)[:, None]  # (4, 1)
        qk = torch.addcmul(self.beta.to(dtype) * scale, z[..., None, :], self.gamma.to(dtype) * scale)  # (B, L, 4, s)
        if self.config.rope:
            qk = rope_adjacent_pairs(qk, positions, self.config.rope_base)
        return (u, v, *qk.unbind(2))

    def _bias(self, dtype) -> Tensor:
        """(C, C): b[i-j] for j <= i and -inf above the diagonal, so that relu² of a score
        plus this bias is already causally masked."""
        C = self.config.chunk_size
        i = torch.arange(C, device=self.gamma.device)
        off = i[:, None] - i[None, :]
        b = self.rel_bias.to(dtype)[off.clamp(min=0)] if self.rel_bias is not None else torch.zeros(C, C, dtype=dtype, device=i.device)
        return b.masked_fill(off < 0, float("-inf"))

    # ---------------------------------------------------------------- forms
    def _forward(self, x, state, lengths, return_state):
        B, L, _ = x.shape
        C = self.config.chunk_size
        fresh = state is None  # nothing buffered: no per-row splice
        if fresh:
            state = self._init_state(B, x.device, ssm_dtype(x))
        positions = torch.arange(L, device=x.device)[None]  # (1, L) when fresh: the same for every row
        if not fresh:
            positions = state.pos[:, None] + positions  # (B, L)
        u, v, q_quad, k_quad, q_lin, k_lin = self._streams(x, positions)
        n_real = torch.full_like(state.pos, L) if lengths is None else lengths
        if lengths is not None:  # padding must not reach the cross-chunk state
            k_lin = k_lin * (torch.arange(L, device=x.device)[None, :] < lengths[:, None])[..., None]

        # prepend the current chunk's buffered tokens, so every row starts at a chunk boundary
        n_buf = None if fresh else state.pos % C
        E_kq, E_kl, E_v = (splice(buf, n_buf, new, C) for buf, new in ((state.kq_buf, k_quad), (state.kl_buf, k_lin), (state.v_buf, v)))
        E_qq, E_ql = (splice(torch.zeros_like(state.kq_buf, dtype=t.dtype), n_buf, t, C) for t in (q_quad, q_lin))
        qq, kq, ql, kl, vv = (rearrange(t, "b (n c) d -> b n c d", c=C) for t in (E_qq, E_kq, E_ql, E_kl, E_v))

        # inside chunks: squared ReLU, causal (the bias is -inf above the diagonal)
        scores = qq @ kq.transpose(-1, -2)  # (B, N, C, C)
        if torch.is_grad_enabled() and scores.requires_grad:
            a = F.relu(scores + self._bias(vv.dtype)).square()
        else:  # inference: the same in place (this is the layer's largest elementwise work)
            a = scores.add_(self._bias(vv.dtype)).relu_().square_()
        o_quad = a @ vv  # (B, N, C, e)
        # across chunks: linear attention over all earlier chunks. A loop over the N chunks
        # carries one (s, e) sum; S_before[n] = S0 + Σ_{m<n} k_lin,m v_mᵀ. The sum stays in
        # ssm_dtype (fp32 under autocast, whose matmuls return bf16/fp16): each chunk's
        # product is added to it in full precision, so rounding does not grow with L.
        # The new state's S is the sum over the chunks before chunk g (the one holding each
        # row's next token), picked up as the loop passes chunk g (no data-dependent indexing).
        end = (0 if fresh else state.pos % C) + n_real  # E index after each row's last real token
        g = torch.div(end, C, rounding_mode="floor")
        S = state.S.to(vv.dtype)
        S_new = S
        for n in range(qq.shape[1]):
            # in place: o_quad is only a matmul's output (in the autocast dtype, if any)
            o_quad[:, n].baddbmm_(ql[:, n].to(o_quad.dtype), S.to(o_quad.dtype))
            S = S + kl[:, n].transpose(-1, -2) @ vv[:, n]
            if return_state:
                S_new = torch.where((g == n + 1)[:, None, None], S, S_new)
        o = unsplice(rearrange(o_quad, "b n c e -> b (n c) e"), n_buf, L)  # (B, L, e)
        y = self.out((u * o).to(x.dtype))
        if not return_state:
            return y, None
        keep = end - g * C
        bufs = [take_rows(t, g * C, C, keep) for t in (E_kq, E_kl, E_v)]
        return y, GAUState(S_new, *bufs, state.pos + n_real)

    def _step(self, x_t, state):
        C = self.config.chunk_size
        u, v, q_quad, k_quad, q_lin, k_lin = (t[:, 0] for t in self._streams(x_t[:, None], state.pos[:, None]))
        p = state.pos % C  # (B,)
        slots = torch.arange(C, device=x_t.device)[None, :]  # (1, C)
        here = (slots == p[:, None])[..., None]  # (B, C, 1)
        kq_buf = torch.where(here, k_quad[:, None], state.kq_buf)
        kl_buf = torch.where(here, k_lin[:, None], state.kl_buf)
        v_buf = torch.where(here, v[:, None], state.v_buf)
        off = p[:, None] - slots  # (B, C): p - j
        bias = self.rel_bias.to(v.dtype)[off.clamp(min=0)] if self.rel_bias is not None else torch.zeros_like(off, dtype=v.dtype)
        bias = bias.masked_fill(off < 0, float("-inf"))  # b[p - j], -inf for j > p
        a = F.relu(torch.einsum("bs,bcs->bc", q_quad, kq_buf) + bias).square()  # 0 for slots > p
        o = torch.einsum("bc,bce->be", a, v_buf) + torch.einsum("bs,bse->be", q_lin, state.S)
        # a completed chunk moves into the cross-chunk state; its buffer empties
        full = p == C - 1
        S = state.S
        if is_tracing() or bool(full.any()):  # eager: skip the (s, C) @ (C, e) product on most steps
            S = torch.where(full[:, None, None], S + kl_buf.transpose(-1, -2) @ v_buf, S)
        kq_buf, kl_buf, v_buf = (t.masked_fill(full[:, None, None], 0.0) for t in (kq_buf, kl_buf, v_buf))
        y = self.out((u * o).to(x_t.dtype))
        return y, GAUState(S, kq_buf, kl_buf, v_buf, state.pos + 1)

    def _init_state(self, batch_size, device, dtype):
        C, s, e = self.config.chunk_size, self.s, self.e
        dtype = torch.promote_types(dtype, torch.float32)
        z = lambda *shape: torch.zeros(batch_size, *shape, device=device, dtype=dtype)  # noqa: E731
        return GAUState(z(s, e), z(C, s), z(C, s), z(C, e), torch.zeros(batch_size, dtype=torch.long, device=device))

    def extra_repr(self) -> str:
        c = self.config
        return f"d_model={c.d_model}, expand={c.expand}, head_dim={c.head_dim}, chunk_size={c.chunk_size}, rope={c.rope}"


__all__ = ["GAU", "GAUConfig", "GAUState"]
