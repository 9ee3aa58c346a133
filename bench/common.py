"""Timing helpers shared by the benchmark scripts: re-exported from :mod:`seqzoo.timing`
(the package's ``seqzoo bench`` commands use the same ones)."""

from seqzoo.timing import median_times, peak_memory, table

__all__ = ["median_times", "peak_memory", "table"]
