"""append_eos (S4's LRA loaders end ListOps, IMDB and AAN sequences with an <eos> token):
one more token id, appended when an item is read, the cached data untouched."""

from __future__ import annotations

import pytest
import torch

import seqzoo.tasks as tasks
from seqzoo.tasks import EOS


@pytest.mark.parametrize("task, options, size", [
    ("listops", {}, 40),
    ("text", {"max_len": 300}, None),
    ("retrieval", {"doc_len": 300}, 40),
])
def test_append_eos(task, options, size, root):
    plain = tasks.build(task, split="val", size=size, root=root, progress=False, **options)
    eos = tasks.build(task, split="val", size=size, root=root, progress=False, append_eos=True, **options)
    assert eos.cache_dir == plain.cache_dir  # read-time: the same cached data
    V = plain.info.vocab_size
    assert eos.info.vocab_size == V + 1 and len(eos.vocab) == V + 1 and eos.vocab[-1] == EOS
    assert eos.info.seq_len == plain.info.seq_len
    n_cut = 0
    for i in range(len(plain)):
        (xs, y), (zs, y2) = plain[i], eos[i]
        assert y == y2
        docs = xs if isinstance(xs, tuple) else (xs,)
        with_eos = zs if isinstance(zs, tuple) else (zs,)
        for x, z in zip(docs, with_eos):
            assert z[-1] == V and (z[:-1] < V).all() and len(z) <= eos.info.seq_len
            if len(x) < eos.info.seq_len:
                assert torch.equal(z[:-1], x)
            else:  # a full-length document loses its last token to make room (S4: l_max - 1, then <eos>)
                n_cut += 1
                assert torch.equal(z[:-1], x[:-1])
    if task != "listops":
        assert n_cut > 0  # the stdlib windows are mostly full length


def test_listops_eos_needs_room():
    with pytest.raises(ValueError, match="seq_len=1999 must be >= 2000, the longest expression plus <eos>"):
        tasks.make_task_config("listops", seq_len=1999, append_eos=True)
