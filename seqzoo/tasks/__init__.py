"""Long-range tasks, generated or read offline (no download ever).

    import seqzoo.tasks as tasks
    tasks.list_tasks()                       # ['adding', 'image', 'induction_heads', 'listops', ...]
    ds = tasks.build("listops", split="train", size=10_000, root="data/")
    info = ds.info                           # TaskInfo: inputs, vocab_size | d_input, n_classes,
                                             # seq_len, target, metric, is_pair, pad_id
    loader = DataLoader(ds, batch_size=32, shuffle=True, collate_fn=ds.collate)
    for inputs, lengths, labels in loader:
        out, _ = model(inputs, lengths=lengths)          # model = build_model(..., **info.model_options())

Conventions (the same for every task, so a training loop needs no task-specific code):

- Items are ``(inputs, label)``; pair tasks give ``((inputs_a, inputs_b), label)``.
- ``inputs`` are unpadded: token tasks a LongTensor (L,) of ids in ``[0, info.vocab_size)``
  (``ds.vocab[id]`` is the token's string), real-valued tasks a FloatTensor (L, C) with
  ``C = info.d_input`` (pixels scaled to [-1, 1]). The length of an item is its true length.
- ``label``: an int (``info.target == "class"``), a float (``"regression"``, scored by MSE),
  or a LongTensor (L,) of per-position targets (``"sequence"``: the output at position t is
  scored against ``label[t]``; positions holding ``info.ignore_index`` = -100 are not scored,
  as with ``F.cross_entropy(..., ignore_index=-100)``).
- ``ds.collate`` turns a list of items into ``(inputs, lengths, labels)``: inputs right-padded
  with ``info.pad_id`` (real inputs with 0.0) to the longest item, ``lengths`` (B,) the true
  lengths, sequence labels padded with -100. Pair tasks: ``(a, b)`` and ``(len_a, len_b)``.
  ``info.pad_id is None`` means every input of the split has the same length. Set
  ``ds.pad_to = info.seq_len`` to pad every batch to the full length, as LRA does.
- Splits are "train", "val", "test". Every task has a ``seed`` option; the same seed, split
  and size give the same bytes on any machine and with any number of worker processes.
- Generated splits (ListOps, Pathfinder, Path-X, Text, Retrieval, Image, Shapes) are cached
  under ``root`` (else ``$SEQZOO_DATA``, else ``~/.cache/seqzoo``) with their config and a
  SHA-256 per file; a stale or corrupt cache is regenerated with a :class:`CacheWarning`.
  Synthetic tasks (MQAR, selective copying, induction heads, adding) draw item ``i`` from a
  generator seeded by ``(seed, split, i)`` and store nothing.

The tasks, their constructions and what they measure are described in ``docs/tasks.md``.
"""

from seqzoo.tasks._base import EOS, Collate, TaskDataset, TaskInfo
from seqzoo.tasks._cache import CacheWarning, data_root
from seqzoo.tasks._registry import (
    build,
    get_task,
    list_tasks,
    make_task_config,
    register_task,
    task_info,
)

__all__ = [
    "CacheWarning",
    "Collate",
    "EOS",
    "TaskDataset",
    "TaskInfo",
    "build",
    "data_root",
    "get_task",
    "list_tasks",
    "make_task_config",
    "register_task",
    "task_info",
]
