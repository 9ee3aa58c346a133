"""The block S4 puts around an SSM: activation -> dropout -> output projection.

S4 (Gu et al. 2022), §3 and its code's ``S4Block``: after y = K * u + D u, apply a
pointwise nonlinearity, dropout, then a position-wise linear layer, by default a GLU
(Dauphin et al. 2017) mixing the channels. Shared by the SSM layers (s4, s4d, rtf, s5).

S5's gated outputs (lindermanlab/S5 ``s5/layers.py``, ``activation_fn``), with
a = dropout(gelu(y)) and one linear map W (H -> H):
    half_glu1   a ⊙ σ(W a)
    half_glu2   y ⊙ σ(W a)     (the activation only on the gate's input)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}


class SSMOutput(nn.Module):
    """y (..., d_in) -> (..., d_out): activation, dropout, then "glu" | "linear" | "identity",
    or S5's "half_glu1" | "half_glu2" (module docstring)."""

    def __init__(self, d_in: int, d_out: int, activation: str = "gelu", output: str = "glu", dropout: float = 0.0):
        super().__init__()
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output = output
        if output in ("identity", "half_glu1", "half_glu2") and d_in != d_out:
            raise ValueError(f"output={output!r} needs as many SSM features ({d_in}) as the model width ({d_out})")
        if output == "glu":
            self.proj = nn.Sequential(nn.Linear(d_in, 2 * d_out), nn.GLU(dim=-1))
        elif output == "linear":
            self.proj = nn.Linear(d_in, d_out)
        elif output in ("linear", "half_glu1", "half_glu2"):
            self.proj = nn.Linear(d_in, d_out)
        elif output == "identity":
            self.proj = nn.Identity()
        else:
            raise ValueError(f"unknown output {output!r}; valid: glu, linear, identity, half_glu1, half_glu2")

    def forward(self, y: Tensor) -> Tensor:
        # The SSM layers hand y over as a (B, L, H) view of their (B, H, L) convolution. On CPU
        # an activation's backward whose input is such a view and whose gradient (from the
        # projection) is contiguous takes the scalar path: GELU's was 12x slower than one
        # contiguous copy and the vectorised pass (32x256x64: 1.47 ms against 0.12 ms).
        y = y.contiguous()
        a = self.dropout(self.activation(y))
        if self.output == "half_glu1":
            return a * torch.sigmoid(self.proj(a))
        if self.output == "half_glu2":
            return y * torch.sigmoid(self.proj(a))
        return self.proj(a)
