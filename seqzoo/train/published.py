"""Published Long Range Arena accuracies (%) to place beside ours.

Sources (as gathered in the project's references, ``anchors.md`` §2):

- S4, S4D, S5, RTF: Parnichkun et al. 2024, "State-Free Inference of State-Space Models:
  The Transfer Function Approach" (RTF), Table 1 (arXiv 2405.06147).
- Transformer: the Long Range Arena repository's README (Tay et al. 2021); Path-X: FAIL
  (chance), reported here as None.

Our tasks are regenerations or substitutes of LRA's (see ``docs/tasks.md``): ListOps,
Pathfinder and Path-X are generated to LRA's construction (faithful regenerations, new
samples); Text, Retrieval and Image are substitutes built from offline sources (stdlib
bytes for IMDB and AAN, scikit-learn digits or procedural shapes for CIFAR-10), so our
numbers there are not comparable with the published ones.
"""

from __future__ import annotations

__all__ = ["LRA_TASKS", "PUBLISHED", "LAYER_TO_MODEL", "SOURCES"]

# our task -> (LRA column, "faithful" | "substitute", what it stands in for)
LRA_TASKS: dict[str, tuple[str, str, str]] = {
    "listops": ("ListOps", "faithful", "regenerated to LRA's generator"),
    "text": ("Text", "substitute", "stdlib .py bytes, test-suite vs library (IMDB unavailable)"),
    "retrieval": ("Retrieval", "substitute", "pairs of stdlib windows, same file? (AAN unavailable)"),
    "image": ("Image", "substitute", "sklearn digits at 32x32 (CIFAR-10 unavailable)"),
    "shapes": ("Image", "substitute", "procedural 10-class shapes at 32x32 (CIFAR-10 unavailable)"),
    "pathfinder": ("Pathfinder", "faithful", "regenerated Pathfinder-32 (hard)"),
    "pathx": ("Path-X", "faithful", "regenerated Path-X-128 (hard)"),
}

# model -> LRA column -> accuracy (%); None: failed (chance)
PUBLISHED: dict[str, dict[str, float | None]] = {
    "S4": {"ListOps": 61.29, "Text": 88.25, "Retrieval": 90.90, "Image": 89.2, "Pathfinder": 94.2, "Path-X": 96.35},
    "S4D": {"ListOps": 60.74, "Text": 87.03, "Retrieval": 90.68, "Image": 89.18, "Pathfinder": 95.42,
            "Path-X": 97.32},
    "S5": {"ListOps": 62.15, "Text": 89.31, "Retrieval": 91.4, "Image": 88.0, "Pathfinder": 95.33, "Path-X": 98.58},
    "RTF": {"ListOps": 61.59, "Text": 89.72, "Retrieval": 92.04, "Image": 90.51, "Pathfinder": 96.11,
            "Path-X": 96.32},
    "Transformer": {"ListOps": 36.37, "Text": 64.27, "Retrieval": 57.46, "Image": 42.44, "Pathfinder": 71.40,
                    "Path-X": None},
}

# our layer -> the published model it corresponds to
LAYER_TO_MODEL = {"s4": "S4", "s4d": "S4D", "s5": "S5", "rtf": "RTF", "attention": "Transformer"}

SOURCES = {
    "S4": "RTF paper (arXiv 2405.06147) Table 1",
    "S4D": "RTF paper (arXiv 2405.06147) Table 1",
    "S5": "RTF paper (arXiv 2405.06147) Table 1",
    "RTF": "RTF paper (arXiv 2405.06147) Table 1 (Path-X with state size 2048)",
    "Transformer": "Long Range Arena README (Tay et al. 2021); a bidirectional encoder, ours is causal",
}
