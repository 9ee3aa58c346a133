"""Timing helpers shared by the benchmark scripts (``bench/``) and ``seqzoo bench``.

The machine is shared and noisy: we time candidates *interleaved* (A, B, C, A, B, C, ...)
and report medians, so that a burst of load hits every candidate alike, and we report
ratios taken within one run rather than absolute times across runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["median_times", "peak_memory", "exact_cpu_memory", "table"]


def median_times(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median wall time (seconds) of each callable, timed round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _trim() -> None:
    """Return freed heap pages to the OS (glibc), so that reused heap memory shows up as
    new resident pages when ``fn`` touches it again."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def exact_cpu_memory(threshold: int = 64 * 1024) -> bool:
    """Make :func:`peak_memory` count live tensors on CPU, not the allocator's heap.

    glibc raises its mmap threshold as large blocks are freed, so after a warm-up most
    tensors under 32 MiB come from the heap, and a loop that grows a buffer step by step (a
    KV cache built by concatenation) leaves freed heap pages resident: the peak RSS of a step
    loop read 200-650 MB for a 2 MB cache (measured). A fixed threshold maps every block of
    ``threshold`` bytes or more on its own and unmaps it when freed, so the peak resident set
    tracks what is alive. It lasts for the process and makes medium allocations slower:
    take timings first. Returns False where it cannot be set (not glibc)."""
    try:
        import ctypes

        M_MMAP_THRESHOLD = -3
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


def peak_memory(fn: Callable[[], object], device: torch.device | str | None = None) -> int:
    """Peak extra bytes while ``fn`` runs on ``device`` (default: CUDA when available, else
    CPU). CUDA: the caching allocator's peak counter.
    CPU (Linux): the process's peak resident set (VmHWM), reset just before ``fn`` through
    /proc/self/clear_refs, minus the resident set at the start. Large CPU tensors are
    mmap'd and returned to the OS when freed, so this measures what ``fn`` allocates.
    Returns -1 where neither is available."""
    on_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    try:
        _trim()
        base = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        fn()
        return max(0, _status_kb("VmHWM") - base) * 1024
    except OSError:
        return -1


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A Markdown table."""
    cells = [tuple(str(c) for c in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, cells[1:])])
