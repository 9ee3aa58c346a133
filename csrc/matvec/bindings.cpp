// Schema and CPU registration of seqzoo::matvec (torch.ops.seqzoo.matvec). The fake kernel
// is registered in Python (seqzoo/ops/matvec/_op.py); no autograd formula: the Python
// wrapper runs F.linear whenever a gradient is needed.
#include <torch/library.h>

#include "matvec/matvec.h"

TORCH_LIBRARY_FRAGMENT(seqzoo, m) { m.def("matvec(Tensor x, Tensor weight, Tensor? bias) -> Tensor"); }

TORCH_LIBRARY_IMPL(seqzoo, CPU, m) { m.impl("matvec", &seqzoo::matvec_cpu); }
