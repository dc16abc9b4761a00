"""Sensitivity suite: do a bundle's scores follow measured drug sensitivity of cell lines?

Units: the cell lines with a baseline (L1000 `cell_line_baselines`, HPA `hpa_cell_lines`) that
GDSC2 screened; signature = baseline - normal tissue of origin (`names.TISSUE_OF_ORIGIN`).
Drugs: the library drugs that GDSC2 screened, matched by InChIKey (GDSC SMILES through RDKit),
else by name. Figure per line: Spearman between a drug's score and its measured AUC, LN_IC50
and Z_SCORE (GDSC's per-drug z-score of LN_IC50 across lines: sensitivity beyond the drug's
general potency). Rows: the bundle per effect and ranking (all matched drugs, and the drugs
the classic method scores), classic connectivity, mean response (the drug's mean measure over
every other GDSC line, leave-one-out) and random scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from unicure_rt.analysis.validation import classic
from unicure_rt.analysis.validation.data import (
    MEASURES,
    DataFolder,
    cell_line_units,
    consensus_signatures,
    drugbank_table,
    gdsc_table,
)
from unicure_rt.analysis.validation.model import EffectModel, unit_scores
from unicure_rt.analysis.validation.names import drug_key
from unicure_rt.analysis.validation.stats import evaluate, rng_for
from unicure_rt.analysis.validation.units import shuffled_rows, signature_genes
from unicure_rt.drugs.fingerprints import inchikeys
from unicure_rt.drugs.library import DrugLibrary

SUITE = "sensitivity"
SCATTER_LINES = 4


def smiles_inchikeys(smiles: pd.Series) -> pd.Series:
    """InChIKeys of SMILES through RDKit (None where a SMILES does not parse)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")

    def key(text: object) -> str | None:
        mol = Chem.MolFromSmiles(text) if isinstance(text, str) else None
        if mol is None:
            return None
        return Chem.MolToInchiKey(mol) or None

    return smiles.map(key)


def gdsc_panel(data: DataFolder, gdsc: pd.DataFrame, library: DrugLibrary) -> pd.DataFrame:
    """One row per GDSC drug found in the library: `drug` (GDSC name), `library_row`,
    `drug_id`, `name`, `inchikey` (the library's), `pathway`, `matched_by`."""
    smiles = data.read("gdsc_smiles", ("name", "CanonicalSMILES"))
    gdsc_keys = dict(zip(smiles["name"], smiles_inchikeys(smiles["CanonicalSMILES"]), strict=True))
    meta = library.metadata
    lib_keys = (
        inchikeys(meta["inchi_key"]) if "inchi_key" in meta else pd.Series([None] * len(meta))
    )
    by_key = {k: i for i, k in reversed(list(enumerate(lib_keys))) if isinstance(k, str)}
    by_name = {drug_key(n): i for i, n in reversed(list(enumerate(library.names))) if n}
    drugs = gdsc.drop_duplicates("DRUG_NAME").sort_values("DRUG_NAME")
    rows, taken = [], set()
    for drug, pathway in zip(drugs["DRUG_NAME"], drugs["PATHWAY_NAME"], strict=True):
        row, how = by_key.get(gdsc_keys.get(drug)), "inchikey"
        if row is None:
            row, how = by_name.get(drug_key(drug)), "name"
        if row is None or row in taken:
            continue
        taken.add(row)
        rows.append(
            {
                "drug": drug,
                "library_row": row,
                "drug_id": library.ids[row],
                "name": library.names[row],
                "inchikey": lib_keys.iloc[row],
                "pathway": pathway,
                "matched_by": how,
            }
        )
    return pd.DataFrame(rows)


def measured(gdsc: pd.DataFrame, units: pd.DataFrame, drugs: pd.Series, measure: str):
    """`float64[n_units, n_drugs]` of `measure` (NaN where GDSC did not screen the pair)."""
    table = gdsc.pivot_table(index="line_key", columns="DRUG_NAME", values=measure)
    table = table.reindex(index=units["line_key"], columns=drugs)
    return table.to_numpy(np.float64)


def mean_response(gdsc: pd.DataFrame, units: pd.DataFrame, drugs: pd.Series, measure: str):
    """Each drug's mean `measure` over every GDSC line but the unit's own (leave-one-out)."""
    own = measured(gdsc, units, drugs, measure)
    grouped = gdsc.groupby("DRUG_NAME")[measure]
    total = grouped.sum().reindex(drugs).to_numpy()[None, :]
    count = grouped.count().reindex(drugs).to_numpy()[None, :]
    has_own = ~np.isnan(own)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total - np.where(has_own, own, 0.0)) / (count - has_own)


def run_sensitivity(
    model: EffectModel,
    data: DataFolder,
    library: DrugLibrary,
    *,
    effects: Sequence[str],
    rank_by: Sequence[str],
    doses: Sequence[float],
    atlas: str,
    seed: int,
    shuffle_genes: bool,
    progress: Callable[[str, int, int], None],
) -> dict:
    """The sensitivity suite's figures (see the module docstring)."""
    gdsc = gdsc_table(data)
    panel = gdsc_panel(data, gdsc, library)
    units, skipped = cell_line_units(data, gdsc, model.genes, atlas)
    genes, index = signature_genes(units, model.genes)
    tumour = units.tumour[genes].to_numpy(np.float64)
    signature = tumour - units.normal[genes].to_numpy(np.float64)
    if shuffle_genes:
        signature = shuffled_rows(signature, seed, list(units.obs.index))
    ids = list(units.obs.index)
    progress(SUITE, 0, len(ids))
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        progress(SUITE, done, len(ids))

    cells = model.embed(units.tumour[genes])
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
    panel["signature_id"] = classic.signature_ids(
        panel["inchikey"], drugbank_table(data), consensus
    )
    has_signature = panel["signature_id"].notna().to_numpy()
    measured_signatures = np.full((len(panel), len(genes)), np.nan)
    measured_signatures[has_signature] = consensus.loc[
        panel["signature_id"][has_signature], genes
    ].to_numpy()
    methods: dict[str, np.ndarray] = {}
    for key, values in scores.items():
        methods[f"bundle, {key}"] = values
        methods[f"bundle, {key}, shared drugs"] = np.where(has_signature[None, :], values, np.nan)
    methods[classic.METHOD] = classic.connectivity(measured_signatures, signature)
    shape = (len(ids), len(panel))
    methods["random"] = rng_for(seed, SUITE, "random").standard_normal(shape)
    rows, per_unit = [], []
    for measure in MEASURES:
        reference = measured(gdsc, units.obs, panel["drug"], measure)
        if np.isnan(reference).all():
            continue
        by_measure = {
            **methods,
            "mean response": mean_response(gdsc, units.obs, panel["drug"], measure),
        }
        summary, records = evaluate(
            by_measure, reference, ids, kind="spearman", suite=SUITE, metric=measure, seed=seed
        )
        rows += summary
        per_unit += records
    auc = measured(gdsc, units.obs, panel["drug"], "AUC")
    covered = np.argsort(-np.sum(~np.isnan(auc), axis=1), kind="stable")[:SCATTER_LINES]
    first = f"bundle, {next(iter(scores))}"
    return {
        "suite": SUITE,
        "unit": "cell line",
        "figure": "Spearman(score, measured value) per cell line; > 0: stronger predicted "
        "reversal goes with higher sensitivity",
        "n_units": len(ids),
        "n_drugs": len(panel),
        "n_drugs_with_signature": int(has_signature.sum()),
        "n_genes": len(genes),
        "normal_atlas": atlas,
        "units_left_out": skipped,
        "units": units.obs.reset_index().to_dict(orient="records"),
        "drugs": panel.drop(columns=["library_row"]).to_dict(orient="records"),
        "summary": rows,
        "per_unit": per_unit,
        "scatter": [
            {
                "unit": ids[i],
                "method": first,
                "score": methods[first][i].tolist(),
                "AUC": auc[i].tolist(),
            }
            for i in covered
        ],
    }
