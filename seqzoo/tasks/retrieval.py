"""Retrieval: do two byte-level documents come from the same source? An offline substitute
for LRA's AAN document matching.

Paper (the original task): Tay et al., "Long Range Arena" (ICLR 2021), §2.2.3: pairs of
ACL Anthology papers, up to 4,000 bytes each, label = whether one cites the other; a
two-tower model (one shared encoder, features [u, v, u*v, u-v]) classifies the pair. The
AAN texts cannot be downloaded here; seqzoo pairs windows of the Python standard library:

- Documents: non-overlapping windows of exactly ``doc_len`` (4,000) bytes of ``.py`` files
  of at least two windows (8 KB).
- Positive pair: two different windows of one file. Negative pair: windows of two files,
  from the same top-level package where there is another one (hard negatives: same
  domain, same vocabulary) with probability ``hard_negatives``, else from any other file.
- Pairs are balanced exactly (pair 2k and 2k+1 get opposite labels), drawn with a seeded
  generator; files are split by a hash of their relative path (80/10/10), so the splits
  share no file and no window.

What it measures: compressing each 4,000-byte document into one vector that keeps what
identifies its source (identifiers, names, style) and comparing two such vectors. Like the
Text substitute it is solvable from shared identifiers, and its numbers are not
comparable with published AAN/LRA Retrieval results.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from seqzoo.tasks import _stdlib
from seqzoo.tasks._base import SPLIT_CODE, CachedTask, TaskInfo, append_eos
from seqzoo.tasks._registry import register_task

__all__ = ["RetrievalConfig", "Retrieval"]


@dataclass
class RetrievalConfig:
    seed: int = 0
    doc_len: int = 4000  # bytes per document (LRA: 4,000)
    hard_negatives: float = 1.0  # probability that a negative pair comes from one package
    source: str | None = None  # folder of .py files (None: this Python's standard library)
    append_eos: bool = False  # end every document with "<eos>" (cut to doc_len - 1 bytes first), as S4's AAN loader

    def __post_init__(self):
        if self.doc_len < 1:
            raise ValueError(f"doc_len must be positive, got {self.doc_len}")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ValueError(f"hard_negatives must be in [0, 1], got {self.hard_negatives}")


@register_task("retrieval", config=RetrievalConfig)
class Retrieval(CachedTask):
    """Pairs of 4,000-byte stdlib windows; label 1 if both come from the same file."""

    default_sizes = {"train": 50_000, "val": 5_000, "test": 5_000}
    vocab = _stdlib.BYTE_VOCAB
    version = 1

    @classmethod
    def make_info(cls, config: RetrievalConfig, split: str) -> TaskInfo:
        return TaskInfo(name="retrieval", inputs="tokens", vocab_size=len(_stdlib.BYTE_VOCAB) + config.append_eos,
                        n_classes=2,
                        seq_len=config.doc_len, target="class", metric="accuracy", is_pair=True, pad_id=0,
                        description="do two 4,000-byte windows of Python source come from one file? (AAN substitute)")

    def source_fingerprint(self) -> dict:
        root = _stdlib.source_dir(self.config.source)
        return {"source_files": _stdlib.fingerprint(root, _stdlib.list_sources(root))}

    @classmethod
    def generate(cls, config: RetrievalConfig, split, size, *, workers=None, progress=True):
        root = _stdlib.source_dir(config.source)
        L = config.doc_len
        files, windows, owner = [], [], []
        for f in _stdlib.list_sources(root):
            if _stdlib.split_of(f) != split:
                continue
            data = _stdlib.read_bytes(root, f)
            n = len(data) // L
            if n < 2:
                continue
            windows.append(data[: n * L].reshape(n, L))
            owner += [len(files)] * n
            files.append(f)
        if len(files) < 2:
            raise ValueError(f"retrieval {split}: fewer than two source files of at least {2 * L} bytes under {root}")
        owner = np.asarray(owner, dtype=np.int32)
        first = np.concatenate([[0], np.cumsum(np.bincount(owner))])  # windows of file f: first[f]:first[f+1]
        by_pkg = defaultdict(list)
        for i, f in enumerate(files):
            by_pkg[_stdlib.package_of(f)].append(i)
        rng = np.random.default_rng([config.seed, SPLIT_CODE[split], 202])
        pairs = np.empty((size, 2), dtype=np.int32)
        labels = np.empty(size, dtype=np.uint8)
        F = len(files)
        for k in range(size):
            label = int(rng.integers(2)) if k % 2 == 0 else 1 - int(labels[k - 1])  # balanced pairs of pairs
            f = int(rng.integers(F))
            if label:
                a, b = rng.choice(first[f + 1] - first[f], 2, replace=False) + first[f]
            else:
                same = by_pkg[_stdlib.package_of(files[f])]
                if len(same) > 1 and rng.random() < config.hard_negatives:
                    g = same[int(rng.integers(len(same) - 1))]
                    g = same[-1] if g == f else g
                else:
                    g = (f + 1 + int(rng.integers(F - 1))) % F
                a = first[f] + int(rng.integers(first[f + 1] - first[f]))
                b = first[g] + int(rng.integers(first[g + 1] - first[g]))
            pairs[k] = (a, b)
            labels[k] = label
        return {
            "windows": np.concatenate(windows),  # (W, doc_len) uint8
            "owner": owner,  # (W,) file index of each window
            "pairs": pairs,
            "labels": labels,
            "files": np.asarray(files),
        }

    def __len__(self) -> int:
        return len(self.arrays["labels"])

    def item(self, index: int):
        a, b = self.arrays["pairs"][index]
        w = self.arrays["windows"]
        return (self._ids(w[a]), self._ids(w[b])), int(self.arrays["labels"][index])

    def _ids(self, window) -> torch.Tensor:
        ids = torch.from_numpy(np.asarray(window, dtype=np.int64)) + 1
        if self.config.append_eos:
            ids = append_eos(ids, len(_stdlib.BYTE_VOCAB), self.info.seq_len)
        return ids

    def sources_of(self, index: int) -> tuple[str, str]:
        """Relative paths of the two files of pair ``index``."""
        a, b = self.arrays["pairs"][index]
        files, owner = self.arrays["files"], self.arrays["owner"]
        return str(files[owner[a]]), str(files[owner[b]])
