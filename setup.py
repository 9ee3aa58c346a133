"""Builds seqzoo and its compiled extension ``seqzoo._C``.

Every ``csrc/<op>/*.cpp`` is compiled into one CPU extension. CUDA sources
(``csrc/<op>/*.cu``) are added only when both a CUDA toolkit and a CUDA build of
torch are present, so a CPU machine never tries to compile them.

Install (torch and the build tools first, then without build isolation so pip keeps your torch):

    pip install torch==2.13.0 setuptools wheel ninja
    pip install --no-build-isolation -e .                    # a checkout, for development
    pip install --no-build-isolation seqzoo-0.1.0.tar.gz     # the sdist (python -m build --sdist)

The configs (``configs/`` at the top of the checkout, where they are edited) ship inside
the package as ``seqzoo/configs``: every file under that folder, by glob, so a new config
ships without editing this file. MANIFEST.in puts them and all of ``csrc/`` in the sdist.

Environment knobs:
    SEQZOO_NO_EXT=1     skip the extension (ops fall back to their references)
    SEQZOO_NO_CUDA=1    never add CUDA sources
    SEQZOO_PORTABLE=1   do not tune for this CPU (no -march=native)
"""

import glob
import os
import sys

from setuptools import find_namespace_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


# setup.py commands that only describe or pack the sources (python -m build --sdist runs them
# in an isolated environment without torch): they need no extension.
_NO_BUILD = {"sdist", "egg_info", "dist_info", "check", "clean", "--name", "--version"}
_BUILDS = ("build", "bdist", "install", "develop", "editable_wheel")


def _packs_only() -> bool:
    args = sys.argv[1:]
    return any(a in _NO_BUILD for a in args) and not any(a.startswith(_BUILDS) for a in args)


def _extensions():
    if os.environ.get("SEQZOO_NO_EXT") == "1":
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        if _packs_only():
            return [], {}
        sys.exit(
            "seqzoo: torch must be installed before building the extension, and pip must not "
            "isolate the build (isolation would fetch an unpinned, multi-GB CUDA torch).\n"
            "  pip install torch==2.13.0 setuptools wheel ninja   # or the torch build you want\n"
            "  pip install --no-build-isolation -e .             # or: ... seqzoo-<version>.tar.gz"
        )

    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    use_cuda = (
        os.environ.get("SEQZOO_NO_CUDA") != "1"
        and torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
        and bool(cu)
    )
    # -fno-trapping-math: seqzoo never enables floating-point exceptions, and without it GCC
    # refuses to if-convert (hence to vectorise) loops whose math has selects, such as the
    # polynomial exp in csrc/vec_math.h. It does not change any result.
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if os.environ.get("SEQZOO_PORTABLE") != "1" and sys.platform.startswith("linux"):
        cxx.append("-march=native")
    extra = {"cxx": cxx}
    define = []
    if use_cuda:
        ext_cls = cpp_extension.CUDAExtension
        sources = cpp + cu
        extra["nvcc"] = ["-O3", "--use_fast_math", "-std=c++20", "--expt-relaxed-constexpr"]
        define.append(("SEQZOO_WITH_CUDA", None))
    else:
        ext_cls = cpp_extension.CppExtension
        sources = cpp
    ext = ext_cls(
        name="seqzoo._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        define_macros=define,
        py_limited_api=False,
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(
    # seqzoo and its subpackages, and the top-level configs/ folder as the data package
    # seqzoo.configs (without moving it in the checkout)
    packages=[*find_namespace_packages(include=["seqzoo", "seqzoo.*"]), "seqzoo.configs"],
    package_dir={"seqzoo.configs": "configs"},
    package_data={"seqzoo.configs": ["**/*"]},
    # package_data above is the whole list of data files (the manifest's csrc/ is for the sdist
    # only); without this, setuptools warns that configs' subfolders look like packages
    include_package_data=False,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
