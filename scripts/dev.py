#!/usr/bin/env python3
"""The README's two commands: set up a virtual environment and run seqzoo.

    python3 scripts/dev.py run    # venv + torch + build the extension + run the main job
                                  # (seqzoo bench lra --preset quick: every layer x every task)
    python3 scripts/dev.py test   # venv + torch + build the extension + run the test suite

Both create ``.venv`` next to this repository on first use (seqzoo with its ``bench`` and
``dev`` extras) and reuse it after.
torch is installed first and pinned (``TORCH_SPEC``, default ``torch==2.13.0``, the CPU
build on machines without a GPU); the package is then installed *without* build
isolation, so pip never replaces that torch with an unpinned CUDA build.

Extra arguments after ``run``/``test`` go to the main job / to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("SEQZOO_VENV", ROOT / ".venv"))
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
# The main job: every registered layer x every task at small sizes (the quick preset);
# prints the results table and the paths of results.md, results.jsonl and accuracy.png.
MAIN_JOB = ["-m", "seqzoo.cli", "bench", "lra", "--preset", "quick"]
EXTRAS = "bench,dev"


def _bin(name: str) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return VENV / sub / name


def _run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def _fingerprint(extras: str) -> str:
    """What the installed environment depends on: the torch pin, the extras, the packaging
    files and the compiled sources. Python sources need no reinstall (editable install)."""
    h = hashlib.sha256(f"{TORCH_SPEC}|{extras}".encode())
    files = [ROOT / "pyproject.toml", ROOT / "setup.py", *sorted((ROOT / "csrc").rglob("*"))]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def setup(extras: str) -> Path:
    py = _bin("python")
    if not py.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".seqzoo-installed-{extras.replace(',', '-')}"
    fingerprint = _fingerprint(extras)
    if stamp.exists() and stamp.read_text() == fingerprint:
        print(f"{VENV}: up to date (torch pin, extras, setup files and csrc/ unchanged)", flush=True)
        return py
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["install", "-q", TORCH_SPEC])
    _run(pip + ["install", "-q", "setuptools>=64", "wheel", "ninja"])
    _run(pip + ["install", "-q", "--no-build-isolation", "-e", f".[{extras}]"])
    stamp.write_text(fingerprint)
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "setup"):
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    # one environment for all three (the extras are small next to torch): `test` after `run`
    # neither reinstalls nor rebuilds, and the tests that use the bench extras run too
    py = setup(EXTRAS)
    if cmd == "run":
        _run([py, *MAIN_JOB, *rest])
    elif cmd == "test":
        _run([py, "-m", "pytest", *rest])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
