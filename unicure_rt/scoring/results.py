"""What a scoring run gives (`ScoreResult`) and the views of it that outputs and reports share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    pass


@dataclass
class ScoreResult:
    ranking: pd.DataFrame
    predictions: pd.DataFrame | None
    run: dict
    combinations: pd.DataFrame | None = None  # the pair table (`unicure_rt.scoring.combinations`)


def dose_label(dose: float) -> str:
    return f"score_{dose:g}uM"


def ranked_top(rows: pd.DataFrame, top: int) -> pd.DataFrame:
    """The `top` best-ranked rows of one profile's table (rank order, then table order;
    unranked drugs never)."""
    ranked = rows[rows["rank"].notna()]
    return ranked.sort_values("rank", kind="stable").head(top)


def top_compounds(rows: pd.DataFrame, top: int) -> pd.DataFrame:
    """`ranked_top`, but a compound listed under several ids (one `same_structure_ids`) once:
    its best-ranked row, with the number of its ids in `copies`, flagged `antineoplastic` when
    any of its ids is (LINCS flags methotrexate under one of its two ids)."""
    once = ranked_top(rows, len(rows)).drop_duplicates("same_structure_ids").head(top)
    once = once.assign(copies=once["same_structure_ids"].str.count("\\|").to_numpy() + 1)
    if "antineoplastic" in rows:
        flagged = rows["same_structure_ids"][rows["antineoplastic"].eq(True)]
        known = once["antineoplastic"].where(~once["same_structure_ids"].isin(flagged), True)
        once = once.assign(antineoplastic=known)
    return once


def l01_mark(flag: object) -> str:
    """'yes' for a drug the library flags antineoplastic (ATC L01); empty for no or unknown."""
    return "yes" if pd.notna(flag) and bool(flag) else ""
