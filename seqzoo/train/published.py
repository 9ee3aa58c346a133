"""Published Long Range Arena accuracies (%) to place beside ours, each row from the
paper's own table.

| row | paper, table |
|---|---|
| S4 | Gu, Goel, Ré, "Efficiently Modeling Long Sequences with Structured State Spaces" (ICLR 2022), Table 4 |
| S4D-LegS | Gu, Gupta, Goel, Ré, "On the Parameterization and Initialization of Diagonal State Space Models" (NeurIPS 2022), LRA table, row S4D-LegS |
| S5 | Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling" (ICLR 2023), Table 1 |
| RTF | Parnichkun et al., "State-Free Inference of State-Space Models: The Transfer Function Approach" (ICML 2024), Table 1 |
| Transformer | Tay et al., "Long Range Arena" (ICLR 2021), Table 1 |

Each row also says what its numbers were checked against in this project (``checked``):
the paper text where a copy was read, otherwise the transcriptions in the project's
references, marked "not verified against the paper text". Other papers' tables copy these
rows with changes (the RTF paper's Table 1 lists S4 at 61.29 / 88.25 / ..., not S4's own
59.60 / 86.82 / ...), so a row is only ever taken from the paper it names.

``s4d`` is compared with S4D-LegS because the full preset runs it on S4's recipe, whose
configs set ``init: legs`` (S4's codebase then builds S4D-LegS); seqzoo's own default init,
S4D-Lin, has a row of its own in the S4D paper, not transcribed here.

Our tasks are regenerations or substitutes of LRA's (see ``docs/tasks.md``): ListOps,
Pathfinder and Path-X are generated to LRA's construction (faithful regenerations, new
samples); Text, Retrieval and Image are substitutes built from offline sources (stdlib
bytes for IMDB and AAN, scikit-learn digits or procedural shapes for CIFAR-10), so our
numbers there are not comparable with the published ones.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LRA_TASKS", "LRA_COLUMNS", "PublishedRow", "ROWS", "PUBLISHED", "LAYER_TO_MODEL", "SOURCES"]

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
LRA_COLUMNS = ("ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X")


@dataclass(frozen=True)
class PublishedRow:
    """One model's LRA accuracies (%) as its paper prints them; None: failed (chance)."""

    model: str
    accuracy: tuple[float | None, float | None, float | None, float | None, float | None, float | None]  # LRA_COLUMNS
    source: str  # paper and table
    checked: str  # what the numbers were compared with in this project

    def as_dict(self) -> dict[str, float | None]:
        return dict(zip(LRA_COLUMNS, self.accuracy))


_REFS = "the project's references (shared/references)"
ROWS: tuple[PublishedRow, ...] = (
    PublishedRow("S4", (59.60, 86.82, 90.90, 88.65, 94.20, 96.35),
                 "S4 (Gu, Goel, Ré, ICLR 2022), Table 4",
                 f"transcribed from S4's Table 4 in issue 16; {_REFS} give the same numbers as the 'S4 updated' "
                 "row of S4's Table 10; no copy of the paper text was read here"),
    PublishedRow("S4D-LegS", (60.47, 86.18, 89.46, 88.19, 93.06, 91.95),
                 "S4D (Gu, Gupta, Goel, Ré, NeurIPS 2022), LRA results table, row S4D-LegS",
                 f"issue 16 and {_REFS} (marked 'secondary sources') give these numbers; not verified against "
                 "the S4D paper text (no copy was read here), nor its table number"),
    PublishedRow("S5", (62.15, 89.31, 91.40, 88.00, 95.33, 98.58),
                 "S5 (Smith, Warrington, Linderman, ICLR 2023), Table 1",
                 f"checked against S5's Table 1 in issue 16's review; {_REFS} give the same numbers through the "
                 "RTF paper's Table 1, which reprints S5's row unchanged"),
    PublishedRow("RTF", (61.59, 89.72, 92.04, 90.51, 96.11, 96.32),
                 "RTF (Parnichkun et al., ICML 2024, arXiv 2405.06147), Table 1; Path-X with state size 2048",
                 f"{_REFS}, read from a stored copy of the RTF paper's text"),
    PublishedRow("Transformer", (36.37, 64.27, 57.46, 42.44, 71.40, None),
                 "Long Range Arena (Tay et al., ICLR 2021), Table 1; Path-X: FAIL (chance); a bidirectional "
                 "encoder, ours is causal",
                 f"checked against LRA's Table 1 in issue 16's review; {_REFS} give the same numbers from the "
                 "Long Range Arena repository's README"),
)

# model -> LRA column -> accuracy (%); None: failed (chance)
PUBLISHED: dict[str, dict[str, float | None]] = {r.model: r.as_dict() for r in ROWS}
SOURCES: dict[str, str] = {r.model: r.source for r in ROWS}

# our layer -> the published row it is compared with
LAYER_TO_MODEL = {"s4": "S4", "s4d": "S4D-LegS", "s5": "S5", "rtf": "RTF", "attention": "Transformer"}
