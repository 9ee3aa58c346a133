#!/usr/bin/env python3
"""The README's two commands: set up a virtual environment and run seqzoo.

    python3 scripts/dev.py run      # venv + torch + build the extension + run the main job
                                    # (seqzoo bench lra --preset quick: every layer x every task)
    python3 scripts/dev.py test     # venv + torch + build the extension + run the test suite,
                                    # then (without pytest arguments) the package check below
    python3 scripts/dev.py package  # only the package check

Both create ``.venv`` next to this repository on first use (seqzoo with its ``bench`` and
``dev`` extras) and reuse it after.
torch is installed first and pinned (``TORCH_SPEC``, default ``torch==2.13.0``, the CPU
build on machines without a GPU); the package is then built *without* build isolation, so
pip never replaces that torch with an unpinned CUDA build.

The extension is compiled once, the way a user's copy is: ``python -m build
--no-isolation`` makes the sdist and then a wheel from that sdist (in ``.venv/dist/``; on
first use the venv holds only torch and the build tools at that point), the wheel's
``seqzoo/_C*.so`` goes into the checkout, and seqzoo is installed editable without
compiling again. The package check then installs that wheel the way a user does (README
"Install") and fails if anything the build or the user needs is missing: it builds the
sdist without torch (``python -m build --sdist``, isolated) and checks that it holds every
tracked file of ``csrc/`` and ``configs/`` and equals the one the wheel came from (else it
rebuilds both), installs the wheel in a fresh venv and, from a folder outside the
checkout, imports seqzoo (the extension must load), compares the packaged configs with
the checkout's, and runs ``seqzoo list`` and a small ``seqzoo train`` on the packaged
configs. It is a step of ``test`` rather than a pytest test so that ``pytest`` stays
quick for development; ``test`` with pytest arguments (a targeted run) skips it, and it is
skipped when the sdist is byte-for-byte the one that last passed.

Extra arguments after ``run``/``test`` go to the main job / to pytest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("SEQZOO_VENV", ROOT / ".venv"))
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
# The main job: every registered layer x every task at small sizes (the quick preset);
# prints the results table and the paths of results.md, results.jsonl and accuracy.png.
MAIN_JOB = ["-m", "seqzoo.cli", "bench", "lra", "--preset", "quick"]
EXTRAS = "bench,dev"
DIST = VENV / "dist"  # the sdist and the wheel built from it (the one compile)


def _bin(name: str, env: Path = VENV) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return env / sub / name


def _run(cmd: list[str], cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, cwd=cwd, **kw)


def _fingerprint(extras: str) -> str:
    """What the installed environment depends on: the torch pin, the extras, the packaging
    files and the compiled sources. Python sources need no reinstall (editable install)."""
    h = hashlib.sha256(f"{TORCH_SPEC}|{extras}".encode())
    files = [ROOT / "pyproject.toml", ROOT / "setup.py", ROOT / "MANIFEST.in", *sorted((ROOT / "csrc").rglob("*"))]
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
    _run(pip + ["install", "-q", "setuptools>=64", "wheel", "ninja", "build"])
    _, wheel = build_dists(py)
    _unpack_extension(wheel)
    # editable, without compiling again: the extension is the wheel's (same sources, same flags)
    _run(pip + ["install", "-q", "--no-build-isolation", "-e", f".[{extras}]"], env={**os.environ, "SEQZOO_NO_EXT": "1"})
    stamp.write_text(fingerprint)
    return py


def build_dists(py: Path) -> tuple[Path, Path]:
    """``DIST``: the sdist of the checkout, then a wheel built from that sdist against the
    venv's torch (``python -m build --no-isolation``; the compile). Returns (sdist, wheel)."""
    shutil.rmtree(DIST, ignore_errors=True)
    try:
        _run([py, "-m", "build", "--no-isolation", "--outdir", DIST, ROOT])
    except subprocess.CalledProcessError:
        # the wheel is built from the sdist: a file the manifest leaves out fails the compile
        # there; name it rather than leave the reader with the compiler's error
        sdists = sorted(DIST.glob("seqzoo-*.tar.gz"))
        if sdists:
            _compare(_tracked("csrc", "configs"), _sources(_sdist_files(sdists[0])), f"sdist {sdists[0].name}")
        raise
    dists = _dists()
    if dists is None:
        raise PackageError(f"python -m build did not leave one sdist and one wheel in {DIST}")
    return dists


def _dists() -> tuple[Path, Path] | None:
    """The (sdist, wheel) in ``DIST``, if there is exactly one of each."""
    sdists, wheels = sorted(DIST.glob("seqzoo-*.tar.gz")), sorted(DIST.glob("seqzoo-*.whl"))
    return (sdists[0], wheels[0]) if len(sdists) == len(wheels) == 1 else None


def _unpack_extension(wheel: Path) -> None:
    """The wheel's ``seqzoo/_C*`` into the checkout's seqzoo/, where an editable install
    would have compiled it. Written beside and renamed over the old one, so a process that
    has the old one loaded keeps running."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if re.fullmatch(r"seqzoo/_C\.[^/]*\.(so|pyd)", n)]
        for name in names:
            tmp = ROOT / (name + ".tmp")
            tmp.write_bytes(z.read(name))
            os.replace(tmp, ROOT / name)
    print(f"extension from {wheel.name}: {', '.join(names) or 'none (SEQZOO_NO_EXT=1?)'}", flush=True)


# ---------------------------------------------------------------------------- package check
class PackageError(Exception):
    """The distributions are not what a user needs."""


def _tracked(*folders: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file git tracks under ``folders`` (every file there,
    outside __pycache__, where this is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", *folders], cwd=ROOT, check=True, capture_output=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for f in folders for p in (ROOT / f).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
    return {n: (ROOT / n).read_bytes() for n in names if (ROOT / n).is_file()}


def _sdist_files(sdist: Path) -> dict[str, bytes]:
    """Relative path (without the ``seqzoo-<version>/`` top folder) -> bytes, for every file."""
    with tarfile.open(sdist) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _compare(expected: dict, got: dict, where: str) -> None:
    """Every key of ``expected`` is in ``got`` with the same value (file -> bytes or hash)."""
    missing = sorted(set(expected) - set(got))
    changed = sorted(n for n in set(expected) & set(got) if expected[n] != got[n])
    if missing or changed:
        raise PackageError(f"{where}: " + "; ".join(
            [f"missing {missing}"] * bool(missing) + [f"different from the checkout: {changed}"] * bool(changed))
            + " (MANIFEST.in puts csrc/ and configs/ in the sdist; setup.py's package_data ships configs/ "
            "in the wheel as seqzoo/configs)")


def _fresh_venv(path: Path, packages: list[str]) -> Path:
    """A new venv at ``path`` with ``packages``; no .pyc compilation (torch's take most of an
    install's time and nothing here needs them precompiled)."""
    venv.EnvBuilder(with_pip=True).create(path)
    py = _bin("python", path)
    _run([py, "-m", "pip", "--disable-pip-version-check", "install", "-q", "--no-compile", *packages])
    return py


# what the user's venv reports about the installed seqzoo (run from outside the checkout)
_PROBE = """
import hashlib, json, seqzoo, seqzoo._ext as ext
from seqzoo.config import configs_dir
root = configs_dir()
layer = seqzoo.build("s4d.yaml", d_model=8)  # a packaged layer config, by name
print(json.dumps({"seqzoo": seqzoo.__file__, "ext": ext.available(), "configs": str(root),
                  "layer": type(layer).__name__,
                  "files": {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                            for p in sorted(root.rglob("*")) if p.is_file()}}))
"""


def check_package(py: Path) -> None:
    """sdist -> wheel (built from it) -> install in a fresh venv -> use, outside the checkout.
    ``py``: the development venv's python (it has ``build``). Raises PackageError."""
    work = Path(tempfile.mkdtemp(prefix="seqzoo-package-"))
    try:
        _check_package(py, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sources(sdist_files: dict[str, bytes]) -> dict[str, bytes]:
    """An sdist's files without the metadata each build regenerates."""
    return {n: b for n, b in sdist_files.items() if not n.startswith("seqzoo.egg-info/") and n != "PKG-INFO"}


def _check_package(py: Path, work: Path) -> None:
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        times[name] = time.perf_counter() - since
        return time.perf_counter()

    t = time.perf_counter()
    # the user's sdist: isolated, so built without torch, as the README says
    _run([py, "-m", "build", "--sdist", "--outdir", work / "sdist", ROOT])
    sdist = next((work / "sdist").glob("seqzoo-*.tar.gz"))
    in_sdist = _sources(_sdist_files(sdist))
    needed = {**_tracked("csrc", "configs"), **{n: (ROOT / n).read_bytes() for n in
                                                 ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md")}}
    _compare(needed, in_sdist, f"sdist {sdist.name}")
    print(f"sdist {sdist.name}: {len(in_sdist)} files, every file of csrc/ and configs/ among them", flush=True)
    t = lap("sdist", t)

    stamp = VENV / ".seqzoo-package-checked"
    h = hashlib.sha256(f"{TORCH_SPEC}|".encode() + Path(__file__).read_bytes())
    for name in sorted(in_sdist):
        h.update(name.encode() + b"\0" + hashlib.sha256(in_sdist[name]).digest())
    if stamp.exists() and stamp.read_text() == h.hexdigest():
        print("package check: this sdist is byte-for-byte the one that last passed; skipped", flush=True)
        return

    # the wheel `setup` built from its sdist is reused when that sdist is this one
    dists = _dists()
    if dists is None or _sources(_sdist_files(dists[0])) != in_sdist:
        print(f"the checkout changed since {DIST} was built: building the sdist and a wheel from it again", flush=True)
        dists = build_dists(py)
        t = lap("wheel from the sdist (compile)", t)
    else:
        print(f"reusing {dists[1]}: built from an sdist with the same files", flush=True)
    _compare(in_sdist, _sources(_sdist_files(dists[0])), f"the sdist {dists[1].name} was built from")
    wheel = dists[1]

    user = _fresh_venv(work / "venv-user", [TORCH_SPEC])
    _run([user, "-m", "pip", "--disable-pip-version-check", "install", "-q", "--no-compile", wheel])
    t = lap("user venv + install the wheel", t)

    # a user's shell: outside the checkout, nothing pointing into it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEQZOO_CONFIGS")}
    env.update(SEQZOO_DATA=str(work / "data"), PYTHONNOUSERSITE="1")
    r = subprocess.run([str(user), "-c", _PROBE], cwd=work, env=env, capture_output=True, text=True)
    if r.returncode:
        raise PackageError(f"the installed seqzoo fails (from {work}):\n{r.stderr}")
    probe = json.loads(r.stdout.splitlines()[-1])
    site = work / "venv-user"
    for key in ("seqzoo", "configs"):
        if not Path(probe[key]).resolve().is_relative_to(site.resolve()):
            raise PackageError(f"{key} came from {probe[key]}, not from the installed wheel in {site}")
    configs = {n.split("/", 1)[1]: hashlib.sha256(b).hexdigest() for n, b in _tracked("configs").items()}
    _compare(configs, probe["files"], f"the installed package's configs ({probe['configs']})")
    if not probe["ext"]:
        raise PackageError("the installed wheel's compiled extension seqzoo._C does not load")
    print(f"installed: {probe['seqzoo']}, extension loads, {len(probe['files'])} packaged configs "
          f"(= the checkout's), seqzoo.build('s4d.yaml') -> {probe['layer']}", flush=True)
    seqzoo = _bin("seqzoo", site)
    _run([seqzoo, "list"], cwd=work, env=env)
    # a short run: it proves the packaged configs and data work, not that s4d learns
    _run([seqzoo, "train", "--task", "listops", "--layer", "s4d", "--preset", "quick", "--out", work / "run",
          "steps=20", "eval_every=20", "train_size=256", "val_size=64", "test_size=64"], cwd=work, env=env)
    lap("seqzoo list + train", t)

    stamp.write_text(h.hexdigest())
    print("package check passed in " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + f"; {time.perf_counter() - t0:.0f} s in all", flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "setup", "package"):
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
        if rest:
            print("package check skipped (pytest arguments given): python3 scripts/dev.py package", flush=True)
        else:
            check_package(py)
    elif cmd == "package":
        check_package(py)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
    except PackageError as e:
        sys.exit(f"package check failed: {e}")
