"""The published LRA numbers placed beside ours: every row is its own paper's table, cites
it, and matches a transcription of it; each layer is compared with the row of the model the
full preset actually runs."""

from __future__ import annotations

from seqzoo.train import compose, resolve
from seqzoo.train.published import LAYER_TO_MODEL, LRA_COLUMNS, LRA_TASKS, PUBLISHED, ROWS, SOURCES
from seqzoo.train.suite import published_table

# (paper, table) and the row as printed there: ListOps, Text, Retrieval, Image, Pathfinder,
# Path-X (None: FAIL). From issue 16's transcriptions and shared/references (anchors.md §2,
# long_range_tasks.md "Published S4 accuracies").
TRANSCRIBED = {
    "S4": (("S4", "ICLR 2022", "Table 4"), (59.60, 86.82, 90.90, 88.65, 94.20, 96.35)),
    "S4D-LegS": (("S4D", "NeurIPS 2022", "S4D-LegS"), (60.47, 86.18, 89.46, 88.19, 93.06, 91.95)),
    "S5": (("S5", "ICLR 2023", "Table 1"), (62.15, 89.31, 91.40, 88.00, 95.33, 98.58)),
    "RTF": (("RTF", "2405.06147", "Table 1"), (61.59, 89.72, 92.04, 90.51, 96.11, 96.32)),
    "Transformer": (("Long Range Arena", "ICLR 2021", "Table 1"), (36.37, 64.27, 57.46, 42.44, 71.40, None)),
}
# What other papers reprint instead (the RTF paper's Table 1): never to appear here.
REPRINTED = {"S4": (61.29, 88.25, 90.90, 89.2, 94.2, 96.35), "S4D": (60.74, 87.03, 90.68, 89.18, 95.42, 97.32)}


def test_every_row_cites_its_paper_and_matches_it():
    assert [r.model for r in ROWS] == list(TRANSCRIBED)
    for row in ROWS:
        cites, numbers = TRANSCRIBED[row.model]
        assert row.accuracy == numbers, row.model
        assert all(c in row.source for c in cites), (row.model, row.source)
        assert row.checked and SOURCES[row.model] == row.source
        assert PUBLISHED[row.model] == dict(zip(LRA_COLUMNS, numbers))
        assert row.accuracy not in REPRINTED.values()


def test_each_layer_meets_the_row_of_what_it_runs():
    """s4d runs S4's recipe, whose init is legs: S4D-LegS. s4 runs S4-LegS (S4's row)."""
    assert LAYER_TO_MODEL == {"s4": "S4", "s4d": "S4D-LegS", "s5": "S5", "rtf": "RTF", "attention": "Transformer"}
    for task in LRA_TASKS:
        assert resolve(compose(task, "s4d", preset="full")).layer_config.init == "legs"
        assert resolve(compose(task, "s4", preset="full")).layer_config.init == "legs"


def test_published_table_prints_sources_and_recipes():
    def res(layer, task, value, recipe):
        return {"layer": layer, "task": task, "value": value, "config": {"recipe": recipe}}

    md = published_table([res("s4d", "listops", 0.6, "s4"), res("s4d", "pathx", 0.9, "s4"),
                          res("mamba", "listops", 0.5, "common")])
    assert "| s4d (S4D-LegS), recipe s4 " in md and "60.0 / 60.47" in md and "90.0 / 91.95" in md
    assert "| mamba, recipe common " in md
    for row in ROWS:
        assert f"- {row.model}: {row.source}. Checked: {row.checked}." in md
