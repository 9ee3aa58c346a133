"""Helpers of the training tests: run the CLI in a subprocess of this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_env(data_root) -> dict[str, str]:
    """Environment for a training subprocess: this checkout first on the path, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["SEQZOO_DATA"] = str(data_root)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def run_cli(args: list[str], data_root, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqzoo.cli", *args], cwd=REPO, env=child_env(data_root),
                          capture_output=True, text=True, timeout=timeout, **kw)
