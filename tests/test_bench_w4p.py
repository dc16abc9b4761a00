"""W4P keeps the earlier rows of other (precision, size) pairs, marked with their run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from w4_scale import with_earlier_rows  # noqa: E402


def entry(date: str, rows: list[dict]) -> dict:
    return {"date": date, "command": f"run {date}", "result": {"rows": rows}}


def test_earlier_rows_of_other_pairs_are_kept_and_marked():
    new = [{"precision": "fp32", "n_drugs": 1_000_000, "speed": 3}]
    earlier = entry(
        "d1",
        [
            {"precision": "fp32", "n_drugs": 1_000_000, "speed": 1},
            {"precision": "int8", "n_drugs": 100_000, "speed": 2},
            {"precision": "fp32", "n_drugs": 100_000, "speed": 4, "measured_in": {"date": "d0"}},
        ],
    )
    rows = with_earlier_rows(new, earlier)
    assert [(r["precision"], r["n_drugs"], r["speed"]) for r in rows] == [
        ("fp32", 100_000, 4),
        ("int8", 100_000, 2),
        ("fp32", 1_000_000, 3),
    ]
    assert rows[0]["measured_in"] == {"date": "d0"}  # the run that measured it, not the last
    assert rows[1]["measured_in"] == {"date": "d1", "command": "run d1"}
    assert "measured_in" not in rows[2]


def test_without_an_earlier_entry_only_the_new_rows():
    new = [{"precision": "int8", "n_drugs": 10}, {"precision": "fp32", "n_drugs": 10}]
    assert [r["precision"] for r in with_earlier_rows(new, None)] == ["fp32", "int8"]
