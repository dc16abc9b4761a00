"""Running the suites: options, order, and the record that validation.json holds.

`run_validation` takes an `EffectModel` (a bundle, or in tests any model with the same
methods), the data folder, the drug library and, for the drug-classes suite, a patient file
read as `score` reads it; it returns one JSON-ready dict with every figure, the data hashes
and the seeds. Same inputs and seed -> the same numbers (sentence draws, permutations,
bootstrap and random rows are all seeded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from unicure_rt.analysis.validation.classes import agreement, run_classes, score_patients
from unicure_rt.analysis.validation.data import DataFolder
from unicure_rt.analysis.validation.model import EffectModel
from unicure_rt.analysis.validation.names import NORMAL_ATLASES
from unicure_rt.analysis.validation.sensitivity import run_sensitivity
from unicure_rt.analysis.validation.signatures import run_signatures
from unicure_rt.analysis.validation.stats import N_BOOTSTRAP, N_PERMUTATIONS
from unicure_rt.defaults import DEFAULT_PERMUTATIONS, EFFECTS, RANK_BY, REFERENCE_DOSES_UM, SUITES
from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.errors import UserError
from unicure_rt.patients.load import PatientProfiles


@dataclass(frozen=True)
class ValidateOptions:
    """Everything about a validation run that is not the data or the model."""

    suites: tuple[str, ...] = SUITES
    effects: tuple[str, ...] = ("published",)
    rank_by: tuple[str, ...] = ("score",)
    doses: tuple[float, ...] = REFERENCE_DOSES_UM
    draws: int = 3
    seed: int = 0
    normal_atlas: str = "hpa"
    shuffle_genes: bool = False

    def __post_init__(self) -> None:
        for name, given, allowed in (
            ("--suites", self.suites, SUITES),
            ("--effect", self.effects, EFFECTS),
            ("--rank-by", self.rank_by, RANK_BY),
        ):
            unknown = [g for g in given if g not in allowed]
            if unknown or not given or len(set(given)) < len(given):
                raise UserError(
                    f"{name} got '{','.join(given)}'; give a comma-separated list of distinct "
                    f"names from {', '.join(allowed)}."
                )
        if self.normal_atlas not in NORMAL_ATLASES:
            raise UserError(
                f"--normals must be one of {', '.join(NORMAL_ATLASES)} (got '{self.normal_atlas}')."
            )
        if self.draws < 1:
            raise UserError(f"--draws must be at least 1 (got {self.draws}).")


def run_validation(
    model: EffectModel,
    data: DataFolder,
    library: DrugLibrary,
    patient: PatientProfiles | None,
    options: ValidateOptions,
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> dict:
    """Every requested suite's figures, with the options and seeds that produced them."""
    if "classes" in options.suites and patient is None:
        raise UserError(
            "The classes suite ranks drugs for patients: give --patients FILE (e.g. "
            "examples/tcga_brca.h5ad --normal-where condition=normal), or leave it out with "
            "--suites sensitivity,signatures."
        )
    common = {
        "effects": options.effects,
        "doses": options.doses,
        "seed": options.seed,
        "shuffle_genes": options.shuffle_genes,
        "progress": progress,
    }
    ranked = {"rank_by": options.rank_by}
    suites: dict[str, dict] = {}
    timings: dict[str, float] = {}
    if "sensitivity" in options.suites:
        started = time.perf_counter()
        suites["sensitivity"] = run_sensitivity(
            model, data, library, atlas=options.normal_atlas, **ranked, **common
        )
        timings["sensitivity_s"] = time.perf_counter() - started
    patients = None
    if patient is not None and {"classes", "signatures"} & set(options.suites):
        started = time.perf_counter()
        patients = score_patients(model, data, library, patient, **ranked, **common)
        timings["patients_s"] = time.perf_counter() - started
    if "signatures" in options.suites:
        started = time.perf_counter()
        suite = run_signatures(model, data, library, **common)
        if patients is not None:
            rows, per_unit = agreement(patients, seed=options.seed, suite="signatures")
            suite["summary"] += rows
            suite["per_unit"] += per_unit
        suites["signatures"] = suite
        timings["signatures_s"] = time.perf_counter() - started
    if "classes" in options.suites:
        started = time.perf_counter()
        suites["classes"] = run_classes(patients, seed=options.seed)
        timings["classes_s"] = time.perf_counter() - started
    return {
        "options": {
            "suites": list(options.suites),
            "effects": list(options.effects),
            "rank_by": list(options.rank_by),
            "z_null_permutations": DEFAULT_PERMUTATIONS if "z" in options.rank_by else 0,
            "doses_uM": list(options.doses),
            "draws": options.draws,
            "seed": options.seed,
            "normal_atlas": options.normal_atlas,
            "shuffle_genes": options.shuffle_genes,
            "n_permutations": N_PERMUTATIONS,
            "n_bootstrap": N_BOOTSTRAP,
        },
        "suites": suites,
        "timings_s": timings,
    }


def comma_list(text: str, what: str) -> tuple[str, ...]:
    """'published,contrast' -> ('published', 'contrast'); blanks dropped; empty is refused."""
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise UserError(f"{what} is empty; give a comma-separated list, e.g. published,contrast.")
    return items
