"""Drug-classes suite: do antineoplastics (ATC L01) rank high in patients' rankings? And how
far does a bundle's patient ranking agree with the classic one?

Units: the tumour profiles of a patient file (e.g. `examples/tcga_brca.h5ad` with its normals),
read exactly as `score` reads them. The bundle scores every library drug; classic connectivity
scores every consensus compound. L01 labels are evaluation labels only: the library's
`antineoplastic` flag for library drugs, DrugBank ATC codes for consensus compounds; drugs
without a label are left out of the AUROC. Rows: the bundle per effect and ranking (all
labelled library drugs; the library drugs that also have a measured signature, "shared"),
classic connectivity
(shared drugs; all consensus compounds), mean response (a drug's bundle score averaged
over the other patients: the part of the ranking every patient shares) and random scores.
`pathway_enrichment` adds, per GDSC target pathway, the AUROC of its drugs among the library
drugs GDSC annotates (descriptive).
`agreement` gives, per patient, the Spearman correlation of each row's scores with the classic
scores over the shared drugs (reported with the signatures suite).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from unicure_rt.analysis.validation import classic
from unicure_rt.analysis.validation.data import (
    DataFolder,
    consensus_signatures,
    drugbank_table,
    gdsc_table,
)
from unicure_rt.analysis.validation.model import EffectModel, unit_scores
from unicure_rt.analysis.validation.sensitivity import gdsc_panel
from unicure_rt.analysis.validation.stats import evaluate, rng_for
from unicure_rt.analysis.validation.units import shuffled_rows
from unicure_rt.drugs.fingerprints import inchikeys
from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.patients.load import PatientProfiles

SUITE = "classes"
METRIC = "L01 AUROC"


@dataclass
class PatientScores:
    """Every patient's scores over the library (`methods`: name -> `[n_patients, n_drugs]`),
    the classic scores on the library axis (NaN without a measured signature), the labels."""

    ids: list[str]
    methods: dict[str, np.ndarray]  # keyed by `model.ranking_key`
    classic_shared: np.ndarray
    labels: np.ndarray  # 1.0 antineoplastic, 0.0 not, NaN unknown (library flag)
    classic_all: np.ndarray  # [n_patients, n_consensus]
    classic_labels: np.ndarray  # DrugBank L01 flag of each consensus compound
    n_genes: int
    pathways: pd.Series  # GDSC target pathway per library row (None: not a GDSC drug)


def leave_one_out_mean(scores: np.ndarray) -> np.ndarray:
    """Each row replaced by the mean of the other rows (NaN with a single row)."""
    n = len(scores)
    if n < 2:
        return np.full_like(scores, np.nan)
    return (scores.sum(axis=0, keepdims=True) - scores) / (n - 1)


def _flags(values: pd.Series) -> np.ndarray:
    return np.array([np.nan if v is None or pd.isna(v) else float(bool(v)) for v in values])


def score_patients(
    model: EffectModel,
    data: DataFolder,
    library: DrugLibrary,
    patient: PatientProfiles,
    *,
    effects: Sequence[str],
    rank_by: Sequence[str],
    doses: Sequence[float],
    seed: int,
    shuffle_genes: bool,
    progress: Callable[[str, int, int], None],
) -> PatientScores:
    """Bundle and classic scores of every tumour profile of `patient`."""
    measured_genes = set(patient.genes)
    index = np.array([i for i, g in enumerate(model.genes) if g in measured_genes])
    genes = [model.genes[i] for i in index]
    tumour = patient.tumour[genes].to_numpy(np.float64)
    signature = tumour - patient.normal[genes].to_numpy(np.float64)
    ids = [str(p) for p in patient.tumour.index]
    if shuffle_genes:
        signature = shuffled_rows(signature, seed, ids)
    progress(SUITE, 0, len(ids))
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        progress(SUITE, done, len(ids))

    cells = model.embed(patient.tumour)
    panel = pd.DataFrame({"library_row": np.arange(len(library))})
    scores = unit_scores(
        model,
        cells,
        tumour,
        signature,
        index,
        model.encode(panel),
        doses=doses,
        effects=effects,
        rank_by=rank_by,
        seed=seed,
        on_unit=step,
    )
    consensus = consensus_signatures(data, genes)
    bank = drugbank_table(data)
    meta = library.metadata
    keys = inchikeys(meta["inchi_key"]) if "inchi_key" in meta else pd.Series([None] * len(meta))
    signature_id = classic.signature_ids(keys, bank, consensus)
    has = signature_id.notna().to_numpy()
    classic_all = classic.connectivity(consensus.to_numpy(np.float64), signature)
    position = {sig: j for j, sig in enumerate(consensus.index)}
    shared = np.full((len(ids), len(library)), np.nan)
    shared[:, has] = classic_all[:, [position[s] for s in signature_id[has]]]
    labels = (
        _flags(meta["antineoplastic"]) if "antineoplastic" in meta else np.full(len(meta), np.nan)
    )
    panel_pathways = gdsc_panel(data, gdsc_table(data), library).set_index("library_row")
    pathways = pd.Series([None] * len(library), dtype=object)
    pathways[panel_pathways.index] = panel_pathways["pathway"].to_numpy()
    return PatientScores(
        ids=ids,
        methods=scores,
        classic_shared=shared,
        labels=labels,
        classic_all=classic_all,
        classic_labels=_flags(bank["l01"].reindex(consensus.index)),
        n_genes=len(genes),
        pathways=pathways,
    )


def run_classes(patients: PatientScores, *, seed: int) -> dict:
    """The L01 AUROC figures (see the module docstring)."""
    shape = patients.classic_shared.shape
    shared = ~np.isnan(patients.classic_shared[0]) if shape[0] else np.zeros(shape[1], bool)
    methods: dict[str, np.ndarray] = {}
    for effect, scores in patients.methods.items():
        methods[f"bundle, {effect}"] = scores
        methods[f"bundle, {effect}, shared drugs"] = np.where(shared[None, :], scores, np.nan)
    methods[f"{classic.METHOD}, shared drugs"] = patients.classic_shared
    for effect, scores in patients.methods.items():
        methods[f"mean response, {effect}"] = leave_one_out_mean(scores)
    methods["random"] = rng_for(seed, SUITE, "random").standard_normal(shape)
    labels = np.broadcast_to(patients.labels, shape)
    rows, per_unit = evaluate(
        methods, labels, patients.ids, kind="auroc", suite=SUITE, metric=METRIC, seed=seed
    )
    all_labels = np.broadcast_to(patients.classic_labels, patients.classic_all.shape)
    more_rows, more_units = evaluate(
        {f"{classic.METHOD}, all consensus compounds": patients.classic_all},
        all_labels,
        patients.ids,
        kind="auroc",
        suite=SUITE,
        metric=METRIC,
        seed=seed,
    )
    pathway_rows, pathway_units, pathway_sizes = pathway_enrichment(patients, methods, seed=seed)
    known = ~np.isnan(patients.labels)
    return {
        "suite": SUITE,
        "unit": "patient",
        "figure": "AUROC of antineoplastics (ATC L01) vs the other labelled drugs, ranked by "
        "score (lower first); 0.5 = chance",
        "n_units": len(patients.ids),
        "n_genes": patients.n_genes,
        "n_labelled_drugs": int(known.sum()),
        "n_antineoplastic": int(np.nansum(patients.labels)),
        "n_shared_labelled": int((known & shared).sum()),
        "n_consensus_labelled": int((~np.isnan(patients.classic_labels)).sum()),
        "pathways": pathway_sizes,
        "summary": rows + more_rows + pathway_rows,
        "per_unit": per_unit + more_units + pathway_units,
    }


PATHWAY_METRIC = "pathway AUROC: "
MIN_PATHWAY_DRUGS = 5


def pathway_enrichment(
    patients: PatientScores, methods: dict[str, np.ndarray], *, seed: int
) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Per GDSC target pathway with at least `MIN_PATHWAY_DRUGS` library drugs: the AUROC, in
    each patient's ranking, of that pathway's drugs against the other GDSC-annotated library
    drugs (descriptive: which drug classes a method puts first; no pathway is "right")."""
    annotated = patients.pathways.notna().to_numpy()
    sizes = patients.pathways.value_counts()
    kept = {str(name): int(n) for name, n in sizes.items() if n >= MIN_PATHWAY_DRUGS}
    shape = patients.classic_shared.shape
    wanted = {
        name: scores
        for name, scores in methods.items()
        if "shared drugs" not in name and not name.startswith("mean response")
    }
    wanted[f"{classic.METHOD}, shared drugs"] = patients.classic_shared
    rows, per_unit = [], []
    for pathway in sorted(kept):
        member = np.where(annotated, (patients.pathways == pathway).to_numpy(float), np.nan)
        found, units = evaluate(
            wanted,
            np.broadcast_to(member, shape),
            patients.ids,
            kind="auroc",
            suite=SUITE,
            metric=PATHWAY_METRIC + pathway,
            seed=seed,
        )
        rows += found
        per_unit += units
    return rows, per_unit, kept


def agreement(patients: PatientScores, *, seed: int, suite: str) -> tuple[list[dict], list]:
    """Per patient: Spearman of each row's scores with the classic scores (shared drugs)."""
    methods: dict[str, np.ndarray] = dict(
        (f"bundle, {effect}", scores) for effect, scores in patients.methods.items()
    )
    for effect, scores in patients.methods.items():
        methods[f"mean response, {effect}"] = leave_one_out_mean(scores)
    methods["random"] = rng_for(seed, suite, "agreement random").standard_normal(
        patients.classic_shared.shape
    )
    return evaluate(
        methods,
        patients.classic_shared,
        patients.ids,
        kind="spearman",
        suite=suite,
        metric="agreement with classic (Spearman)",
        seed=seed,
    )
