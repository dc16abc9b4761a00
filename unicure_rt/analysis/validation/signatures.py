"""Signatures suite: does a bundle's predicted effect of a drug look like its measured one?

Units: the compounds of `l1000/consensi_drugbank.parquet` whose structure is known: a library
drug with the same InChIKey, else (for bundles that embed structures themselves) the LINCS
SMILES of that InChIKey, else the SMILES RDKit writes for the DrugBank InChI. Predicted effect:
the mean over the doses of `pred - baseline` (the chosen effect) on the `averaged` L1000 cell
line, the cell the consensus signatures (pooled over cell lines and doses) stand for. Figures
per compound: cosine and Pearson with the measured consensus z-scores. Rows: the bundle per
effect, over all compounds and split by `lincs_structure` (the bundled demo model's stage 2
trained on every consensus compound with a LINCS structure: in-sample; the others it never
saw), mean response (the mean measured signature of the other compounds) and random
directions. The classic method has no row here: its "prediction" is the measured signature.
The null shuffles compound labels: compound i's prediction against compound j's measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from unicure_rt.analysis.validation.data import (
    AVERAGED,
    DataFolder,
    consensus_signatures,
    drugbank_table,
    gene_columns,
    lincs_structures,
)
from unicure_rt.analysis.validation.model import EffectModel, mean_effects
from unicure_rt.analysis.validation.stats import N_PERMUTATIONS, rng_for, summary
from unicure_rt.analysis.validation.units import shuffled_rows
from unicure_rt.drugs.fingerprints import inchikeys
from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.scoring.effects import unit_centred

SUITE = "signatures"
FIGURES = ("cosine", "pearson")


def inchi_smiles(inchi: pd.Series) -> pd.Series:
    """SMILES that RDKit writes for InChI strings (None where one does not parse)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")

    def smiles(text: object) -> str | None:
        mol = Chem.MolFromInchi(text) if isinstance(text, str) else None
        return None if mol is None else Chem.MolToSmiles(mol)

    return inchi.map(smiles)


def consensus_panel(
    data: DataFolder, consensus: pd.DataFrame, library: DrugLibrary, with_structures: bool
) -> pd.DataFrame:
    """The consensus compounds a model can embed: `signature_id`, `name`, `library_row`
    (nullable), `smiles`, `lincs_structure` (bool), `structure_from`."""
    bank = drugbank_table(data).reindex(consensus.index)
    meta = library.metadata
    lib_keys = (
        inchikeys(meta["inchi_key"]) if "inchi_key" in meta else pd.Series([None] * len(meta))
    )
    by_key = {k: i for i, k in reversed(list(enumerate(lib_keys))) if isinstance(k, str)}
    lincs = lincs_structures(data).set_index("inchikey")["smiles"]
    panel = pd.DataFrame(
        {
            "signature_id": consensus.index,
            "name": bank["name"].fillna(pd.Series(consensus.index, index=consensus.index)),
            "inchikey": bank["inchikey"],
        }
    ).reset_index(drop=True)
    panel["library_row"] = panel["inchikey"].map(by_key).astype("Int64")
    panel["lincs_structure"] = panel["inchikey"].isin(lincs.index)
    panel["smiles"] = panel["inchikey"].map(lincs).astype("object")
    panel["structure_from"] = np.where(panel["library_row"].notna(), "library", None)
    if with_structures:
        from_lincs = panel["library_row"].isna() & panel["smiles"].notna()
        panel.loc[from_lincs, "structure_from"] = "LINCS SMILES"
        rest = panel["library_row"].isna() & panel["smiles"].isna()
        written = inchi_smiles(bank["inchi"].reset_index(drop=True)[rest])
        panel.loc[rest, "smiles"] = written
        panel.loc[rest & panel["smiles"].notna(), "structure_from"] = "DrugBank InChI"
    return panel[panel["structure_from"].notna()].reset_index(drop=True)


def figure_matrix(figure: str, predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """`[n, n]`: the figure of prediction i against measurement j."""
    if figure == "pearson":
        predicted, measured = unit_centred(predicted), unit_centred(measured)
    else:
        predicted = predicted / np.linalg.norm(predicted, axis=1, keepdims=True)
        measured = measured / np.linalg.norm(measured, axis=1, keepdims=True)
    return predicted @ measured.T


def _rows(
    methods: dict[str, tuple[np.ndarray, np.ndarray]],
    measured: np.ndarray,
    ids: list[str],
    seed: int,
) -> tuple[list[dict], list[dict]]:
    """Summary rows and per-compound records of every (method, figure); `methods` maps a name
    to its predictions and the compound rows they cover."""
    rows, per_unit = [], []
    for method, (predicted, covered) in methods.items():
        for figure in FIGURES:
            matrix = figure_matrix(figure, predicted[covered], measured[covered])
            values = np.diag(matrix).copy()
            rng = rng_for(seed, SUITE, figure, method)
            null = np.array(
                [
                    np.mean(matrix[np.arange(len(values)), rng.permutation(len(values))])
                    for _ in range(N_PERMUTATIONS)
                ]
            )
            record = summary(values, null, rng_for(seed, SUITE, figure, method, "ci"))
            rows.append({"method": method, "metric": figure, **record})
            per_unit += [
                {"unit": ids[i], "method": method, "metric": figure, "value": float(v)}
                for i, v in zip(np.flatnonzero(covered), values, strict=True)
            ]
    return rows, per_unit


def run_signatures(
    model: EffectModel,
    data: DataFolder,
    library: DrugLibrary,
    *,
    effects: Sequence[str],
    doses: Sequence[float],
    seed: int,
    shuffle_genes: bool,
    progress: Callable[[str, int, int], None],
) -> dict:
    """The signatures suite's figures (see the module docstring)."""
    consensus = consensus_signatures(data, model.genes)
    genes = list(consensus.columns)
    index = np.array([model.genes.index(g) for g in genes])
    panel = consensus_panel(data, consensus, library, model.encodes_structures)
    measured = consensus.loc[panel["signature_id"]].to_numpy(np.float64)
    ids = panel["signature_id"].tolist()
    if shuffle_genes:
        measured = shuffled_rows(measured, seed, ids)
    baselines = gene_columns(data.read("l1000_baselines"), model.genes)
    if AVERAGED not in baselines.index:
        baselines.loc[AVERAGED] = baselines.mean()
    cell_profile = baselines.loc[[AVERAGED]]
    progress(SUITE, 0, 1)
    cell = model.embed(cell_profile)[0]
    tumour = cell_profile.reindex(columns=model.genes).to_numpy(np.float64)[0]
    effect = mean_effects(model, cell, tumour, model.encode(panel), doses=doses, effects=effects)
    progress(SUITE, 1, 1)
    everything = np.ones(len(panel), dtype=bool)
    lincs = panel["lincs_structure"].to_numpy()
    methods = {}
    for name in effects:
        predicted = effect[name][:, index]
        methods[f"bundle, {name}"] = (predicted, everything)
        if lincs.any() and not lincs.all():
            methods[f"bundle, {name}, LINCS structure"] = (predicted, lincs)
            methods[f"bundle, {name}, no LINCS structure"] = (predicted, ~lincs)
    total = measured.sum(axis=0, keepdims=True)
    methods["mean response"] = ((total - measured) / (len(measured) - 1), everything)
    methods["random"] = (rng_for(seed, SUITE, "random").standard_normal(measured.shape), everything)
    rows, per_unit = _rows(methods, measured, ids, seed)
    counts = panel["structure_from"].value_counts().to_dict()
    return {
        "suite": SUITE,
        "unit": "compound",
        "figure": "cosine / Pearson of predicted effect (averaged L1000 cell, mean over doses) "
        "with the measured consensus signature",
        "n_units": len(panel),
        "n_consensus_compounds": len(consensus),
        "n_lincs_structure": int(lincs.sum()),
        "structures": {str(k): int(v) for k, v in counts.items()},
        "n_genes": len(genes),
        "compounds": panel.drop(columns=["library_row", "smiles"]).to_dict(orient="records"),
        "summary": rows,
        "per_unit": per_unit,
    }
