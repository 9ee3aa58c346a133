"""seqzoo's ops: each a folder with the public function, its reference (``ref.py``, the
spec) and the glue that registers the compiled kernel with ``torch.library``.

Every public op takes ``backend="auto" | "ref" | "cpp" | "cuda"``; the choice is made in
:mod:`seqzoo.ops._dispatch`.
"""

from seqzoo.ops.cauchy import cauchy
from seqzoo.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from seqzoo.ops.diag_scan import diag_scan
from seqzoo.ops.linear_attn import linear_attn
from seqzoo.ops.matvec import matvec
from seqzoo.ops.selective_scan import selective_scan
from seqzoo.ops.selective_step import selective_step
from seqzoo.ops.ssd import ssd
from seqzoo.ops.vandermonde import vandermonde, vandermonde_transpose

__all__ = [
    "cauchy",
    "causal_conv1d",
    "causal_conv1d_update",
    "diag_scan",
    "linear_attn",
    "matvec",
    "selective_scan",
    "selective_step",
    "ssd",
    "vandermonde",
    "vandermonde_transpose",
]
