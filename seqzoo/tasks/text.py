"""Text: byte-level classification of long documents, an offline substitute for LRA's IMDB.

Paper (the original task): Tay et al., "Long Range Arena" (ICLR 2021), §2.2.2: IMDB reviews
as bytes, up to 4K bytes, binary sentiment. IMDB cannot be downloaded here, so seqzoo
uses what every Python installation ships: the standard library's ``.py`` files.

- Documents: consecutive, non-overlapping windows of up to ``max_len`` (4096) bytes of
  each file; a last piece shorter than ``min_len`` (256) is dropped. Items have their true
  length (pad with ``info.pad_id``).
- Label: 1 if the file belongs to a test suite (under ``test/``, ``tests/``,
  ``idle_test/``, or named ``test_*.py``), 0 for library code.
- Splits by a hash of the file's relative path (80/10/10), so no file is in two splits;
  with ``balance`` (default) the larger class is subsampled to 50/50 in every split.

What it measures: reading 4K bytes of real, structured text (177 distinct byte values,
long-range syntax) and pooling evidence over the whole window. It is *not* sentiment: the
label is largely decidable from local cues (``self.assert``, ``import unittest``), so a
character 3-gram linear model already scores far above chance; numbers are not comparable
with published IMDB/LRA Text results. Its contents follow the Python version (the cache
key includes a fingerprint of the files).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqzoo.tasks import _stdlib
from seqzoo.tasks._base import SPLIT_CODE, CachedTask, TaskInfo, append_eos
from seqzoo.tasks._registry import register_task

__all__ = ["TextConfig", "Text"]


@dataclass
class TextConfig:
    seed: int = 0
    max_len: int = 4096  # bytes per document (LRA: 4K)
    min_len: int = 256  # shorter last pieces of a file are dropped
    balance: bool = True  # subsample the larger class to 50/50 in each split
    source: str | None = None  # folder of .py files (None: this Python's standard library)
    append_eos: bool = False  # end every document with "<eos>" (cut to max_len - 1 bytes first), as S4's IMDB loader

    def __post_init__(self):
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")


def _windows(data: np.ndarray, max_len: int, min_len: int) -> list[tuple[int, int]]:
    return [(s, min(s + max_len, len(data))) for s in range(0, len(data), max_len) if min(max_len, len(data) - s) >= min_len]


@register_task("text", config=TextConfig)
class Text(CachedTask):
    """Byte-level classification of stdlib source windows: test suite (1) vs library (0)."""

    default_sizes = {"train": None, "val": None, "test": None}  # None: every window of the split
    vocab = _stdlib.BYTE_VOCAB
    version = 1

    @classmethod
    def make_info(cls, config: TextConfig, split: str) -> TaskInfo:
        return TaskInfo(name="text", inputs="tokens", vocab_size=len(_stdlib.BYTE_VOCAB) + config.append_eos, n_classes=2,
                        seq_len=config.max_len, target="class", metric="accuracy", pad_id=0,
                        description="is this window of Python source from a test suite? (bytes; IMDB substitute)")

    def source_fingerprint(self) -> dict:
        root = _stdlib.source_dir(self.config.source)
        return {"source_files": _stdlib.fingerprint(root, _stdlib.list_sources(root))}

    @classmethod
    def generate(cls, config: TextConfig, split, size, *, workers=None, progress=True):
        root = _stdlib.source_dir(config.source)
        files = [f for f in _stdlib.list_sources(root) if _stdlib.split_of(f) == split]
        chunks, labels, file_idx = [], [], []
        for i, f in enumerate(files):
            data = _stdlib.read_bytes(root, f)
            for s, e in _windows(data, config.max_len, config.min_len):
                chunks.append(data[s:e])
                labels.append(int(_stdlib.is_test_file(f)))
                file_idx.append(i)
        labels = np.asarray(labels, dtype=np.uint8)
        rng = np.random.default_rng([config.seed, SPLIT_CODE[split], 101])
        order = rng.permutation(len(chunks))
        if config.balance:
            n = min(int((labels == 0).sum()), int((labels == 1).sum()))
            keep = np.concatenate([order[labels[order] == c][:n] for c in (0, 1)])
            order = keep[rng.permutation(len(keep))]
        if size is not None:
            if size > len(order):
                raise ValueError(f"text {split} split has {len(order)} windows (balance={config.balance}); "
                                 f"size={size} is too large")
            order = order[:size]
        lengths = np.array([len(chunks[i]) for i in order], dtype=np.int64)
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return {
            "bytes": np.concatenate([chunks[i] for i in order]) if len(order) else np.zeros(0, np.uint8),
            "offsets": offsets,
            "labels": labels[order],
            "file": np.asarray(file_idx, dtype=np.int32)[order],
            "files": np.asarray(files),  # relative paths of this split's source files
        }

    def __len__(self) -> int:
        return len(self.arrays["labels"])

    def item(self, index: int):
        o = self.arrays["offsets"]
        ids = torch.from_numpy(np.asarray(self.arrays["bytes"][o[index]: o[index + 1]], dtype=np.int64)) + 1
        if self.config.append_eos:
            ids = append_eos(ids, len(_stdlib.BYTE_VOCAB), self.info.seq_len)
        return ids, int(self.arrays["labels"][index])

    def source_of(self, index: int) -> str:
        """Relative path of the file item ``index`` comes from."""
        return str(self.arrays["files"][self.arrays["file"][index]])
