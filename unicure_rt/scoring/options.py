"""What a scoring run is asked to do: its options, the effect and ranking it uses, its library."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unicure_rt.bundle.load import Bundle
from unicure_rt.defaults import DEFAULT_PERMUTATIONS, EFFECTS, RANK_BY, REFERENCE_DOSES_UM
from unicure_rt.drugs.library import DrugLibrary, load_library
from unicure_rt.errors import UserError
from unicure_rt.runtime.sessions import RuntimeOptions

if TYPE_CHECKING:
    pass


@dataclass
class ScoreOptions:
    """Everything about a scoring run that is not the input data.

    `effect` is one of `scoring.EFFECTS`; `permutations` gene-shuffled copies of each
    profile's signature make every drug's null (0: no null, no z / p-value / FDR columns);
    `rank_by` is one of `RANK_BY`.
    """

    doses: tuple[float, ...] = REFERENCE_DOSES_UM
    draws: int = 3
    seed: int = 0
    # Drugs per FlexPert run. 512 rather than 4,096: on 2 cores W1's scoring path (published-size
    # FlexPert) ran 4.8 s instead of 5.5 s (`benchmarks/roofline.py`, "scoring path at each drug
    # batch size"; predictions identical, every row is computed alone), and a batch's
    # predictions and effects take an eighth of the memory.
    drug_batch: int = 512
    prediction_top: int = 0  # keep predicted expression of the top N drugs per profile
    effect: str = "published"
    rank_by: str = "score"
    permutations: int = DEFAULT_PERMUTATIONS
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise UserError(f"--draws must be at least 1 (got {self.draws}).")
        if not self.doses:
            raise UserError("At least one dose is needed: pass --doses, e.g. --doses 0.1,1,10.")
        if any(not np.isfinite(d) or d < 0 for d in self.doses):
            raise UserError(f"Doses must be non-negative numbers in µM (got {list(self.doses)}).")
        if self.effect not in EFFECTS:
            raise UserError(
                f"Unknown --effect '{self.effect}'. Choose {' or '.join(EFFECTS)}: published is "
                "pred - tumour (the paper's formula), contrast is pred - pred(no drug)."
            )
        if self.rank_by not in RANK_BY:
            raise UserError(f"Unknown --rank-by '{self.rank_by}'. Choose {' or '.join(RANK_BY)}.")
        if not 0 <= self.permutations <= 100_000:
            raise UserError(
                f"--permutations must be between 0 and 100000 (got {self.permutations}); 1000 "
                "gives p-values down to 0.001."
            )
        if self.rank_by == "z" and not self.permutations:
            raise UserError("--rank-by z needs the null: leave --permutations above 0.")


def scoring_choice(bundle: Bundle, effect: str | None, rank_by: str | None) -> tuple[str, str]:
    """The effect and ranking a run uses: those asked for, else the bundle's own choice
    (manifest `scoring`, written where the evidence was measured), else the published formula
    ranked by raw score."""
    chosen = bundle.manifest.get("scoring") or {}
    return (
        effect or chosen.get("effect") or "published",
        rank_by or chosen.get("rank_by") or "score",
    )


def resolve_library(bundle: Bundle, drugs: Path | None) -> DrugLibrary:
    """The library given with --drugs, else the bundle's own; verified for the bundle's encoder."""
    path = drugs or bundle.library_path
    if path is None:
        raise UserError(
            f"Bundle '{bundle.path}' ships no drug library. Pass one with --drugs LIB (build it "
            "with `unicure-rt drugs build` or `unicure-rt drugs import`)."
        )
    encoder = bundle.drug_encoder
    return load_library(path, encoder_id=encoder["id"], dim=encoder["dim"])
