"""Reading the validation data folder (the layout of `../shared/data`, nothing is downloaded).

Reads, under `--data-dir`: GDSC2 fitted dose response and GDSC SMILES (`sensitivity/`), the
L1000 cell-line baselines and consensus signatures (`l1000/`), HPA cell lines, HPA tissues and
GTEx tissues (`normal/`), DrugBank and LINCS compound tables (`drugs/`). Every file is checked
for its columns; a missing or unreadable file is a UserError naming it. Expression comes back
on a log2 scale (RNA-seq nTPM/TPM as log2(x + 1), what the clinic side computes for a TPM input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unicure_rt.analysis.validation.names import cell_line_key, has_atc_prefix, normal_tissue
from unicure_rt.drugs.fingerprints import inchikeys
from unicure_rt.errors import UserError
from unicure_rt.provenance import sha256_file

FILES = {
    "gdsc": "sensitivity/gdsc2_fitted_dose_response.parquet",
    "gdsc_smiles": "sensitivity/gdsc_drug_smiles.csv",
    "l1000_baselines": "l1000/cell_line_baselines.parquet",
    "consensus": "l1000/consensi_drugbank.parquet",
    "hpa_lines": "normal/hpa_cell_lines.parquet",
    "hpa_tissues": "normal/hpa_tissue_consensus.parquet",
    "gtex_tissues": "normal/gtex_tissue_median_tpm.parquet",
    "drugbank": "drugs/drugbank.tsv",
    "lincs": "drugs/lincs_compounds.tsv.gz",
}
GDSC_COLUMNS = ("CELL_LINE_NAME", "TCGA_DESC", "DRUG_NAME", "PATHWAY_NAME", "LN_IC50", "AUC")
AVERAGED = "averaged"  # the mean-cell-line row of cell_line_baselines.parquet
MEASURES = ("AUC", "LN_IC50", "Z_SCORE")


@dataclass
class DataFolder:
    """The data folder and the files read from it (for validation.json's hashes)."""

    root: Path
    used: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise UserError(
                f"--data-dir '{self.root}' is not a folder. Point it at a folder laid out like "
                f"the shared data (e.g. {FILES['gdsc']}, {FILES['consensus']}); validate reads "
                "local files only and downloads nothing."
            )

    def path(self, name: str) -> Path:
        path = self.root / FILES[name]
        if not path.is_file():
            raise UserError(
                f"'{path}' is missing: validate needs {FILES[name]} under --data-dir "
                f"'{self.root}'. Check --data-dir, or copy the file there from its source (see "
                "the data README), or leave out the suite that needs it with --suites."
            )
        self.used[name] = path
        return path

    def read(self, name: str, columns: tuple[str, ...] = ()) -> pd.DataFrame:
        """One table, with its `columns` checked."""
        path = self.path(name)
        try:
            if path.suffix == ".parquet":
                table = pd.read_parquet(path)
            else:
                table = pd.read_csv(path, sep="\t" if ".tsv" in path.name else ",")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise UserError(
                f"'{path}' could not be read ({type(exc).__name__}: {exc}). Replace it with an "
                "intact copy of the data file."
            ) from None
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise UserError(
                f"'{path}' lacks the column(s) {', '.join(missing)}; it does not look like "
                f"{FILES[name]}. Replace it with the original file."
            )
        return table

    def hashes(self) -> dict[str, dict[str, str]]:
        return {
            FILES[name]: {"path": str(path), "sha256": sha256_file(path)}
            for name, path in sorted(self.used.items())
        }


def log2_expression(linear: pd.DataFrame) -> pd.DataFrame:
    """nTPM/TPM -> log2(x + 1), float64 (NaN stays NaN)."""
    return np.log2(linear.astype(np.float64).clip(lower=0) + 1.0)


def gene_columns(table: pd.DataFrame, genes: list[str]) -> pd.DataFrame:
    """The `genes` columns of `table` that it has, in `genes` order, as float64."""
    present = [g for g in genes if g in table.columns]
    return table[present].astype(np.float64)


def gdsc_table(data: DataFolder) -> pd.DataFrame:
    """GDSC2 rows with `line_key` (normalised cell line name); duplicate (line, drug) screens
    are averaged."""
    table = data.read("gdsc", GDSC_COLUMNS)
    if "Z_SCORE" not in table:
        table["Z_SCORE"] = np.nan
    table = table.assign(line_key=table["CELL_LINE_NAME"].map(cell_line_key))
    keep = ["line_key", "DRUG_NAME"]
    first = table.groupby(keep, sort=True)[["CELL_LINE_NAME", "TCGA_DESC", "PATHWAY_NAME"]].first()
    means = table.groupby(keep, sort=True)[list(MEASURES)].mean()
    return first.join(means).reset_index()


@dataclass
class Units:
    """Tumour-like profiles and the normal each signature is taken against (log2, gene columns),
    with one obs row per unit (index = unit id)."""

    tumour: pd.DataFrame
    normal: pd.DataFrame
    obs: pd.DataFrame


def cell_line_units(
    data: DataFolder, gdsc: pd.DataFrame, genes: list[str], atlas: str
) -> tuple[Units, dict]:
    """Every L1000-baseline and HPA cell line that GDSC2 screened and whose tumour type maps to
    a normal tissue of `atlas`; returns the units and a count of the lines left out and why."""
    lines = gdsc.drop_duplicates("line_key").set_index("line_key")
    tissues = log2_expression(
        gene_columns(data.read("hpa_tissues" if atlas == "hpa" else "gtex_tissues"), genes)
    )
    sources = {
        "L1000": gene_columns(data.read("l1000_baselines"), genes).drop(AVERAGED, errors="ignore"),
        "HPA": log2_expression(gene_columns(data.read("hpa_lines"), genes)),
    }
    tumour, normal, obs = [], [], []
    skipped = {"not_in_gdsc": 0, "no_tissue_of_origin": 0}
    for source, table in sources.items():
        for line, profile in table.iterrows():
            key = cell_line_key(line)
            if key not in lines.index:
                skipped["not_in_gdsc"] += 1
                continue
            desc = lines.loc[key, "TCGA_DESC"]
            tissue = normal_tissue(desc, atlas)
            if tissue is None or tissue not in tissues.index:
                skipped["no_tissue_of_origin"] += 1
                continue
            unit = f"{source}:{line}"
            tumour.append(profile.rename(unit))
            normal.append(tissues.loc[tissue].rename(unit))
            obs.append(
                {
                    "unit": unit,
                    "source": source,
                    "cell_line": str(line),
                    "line_key": key,
                    "gdsc_name": str(lines.loc[key, "CELL_LINE_NAME"]),
                    "tcga_desc": str(desc),
                    "normal_tissue": tissue,
                }
            )
    if not obs:
        raise UserError(
            "No cell line of l1000/cell_line_baselines.parquet or normal/hpa_cell_lines.parquet "
            "matches a GDSC2 cell line with a mapped tissue of origin, so the sensitivity suite "
            "has nothing to test. Check that --data-dir holds the original files."
        )
    frame = pd.DataFrame(obs).set_index("unit")
    return Units(pd.DataFrame(tumour), pd.DataFrame(normal), frame), skipped


def drugbank_table(data: DataFolder) -> pd.DataFrame:
    """DrugBank rows with a clean `inchikey`, their `l01` flag (None without ATC codes), name
    and InChI (index = drugbank_id)."""
    table = data.read("drugbank", ("drugbank_id", "name", "atc_codes", "inchikey", "inchi"))
    table = table.drop_duplicates("drugbank_id").set_index("drugbank_id")
    return pd.DataFrame(
        {
            "name": table["name"].astype("string"),
            "inchikey": inchikeys(table["inchikey"]),
            "inchi": table["inchi"].astype("string"),
            "l01": table["atc_codes"].map(has_atc_prefix).astype("object"),
        }
    )


def consensus_signatures(data: DataFolder, genes: list[str]) -> pd.DataFrame:
    """Measured L1000 consensus z-score signatures (index = DrugBank id, columns = genes)."""
    table = gene_columns(data.read("consensus"), genes)
    if table.shape[1] < 100:
        raise UserError(
            f"'{data.used['consensus']}' has only {table.shape[1]} of the bundle's output genes; "
            "it must hold one consensus signature per compound over the L1000 landmark genes."
        )
    return table.sort_index()


def lincs_structures(data: DataFolder) -> pd.DataFrame:
    """LINCS compounds with a SMILES: `inchikey`, `smiles`, one row per InChIKey."""
    table = data.read("lincs", ("pert_id", "canonical_smiles", "inchi_key"))
    table = table.dropna(subset=["canonical_smiles"])
    frame = pd.DataFrame(
        {"inchikey": inchikeys(table["inchi_key"]), "smiles": table["canonical_smiles"]}
    )
    return frame.dropna(subset=["inchikey"]).drop_duplicates("inchikey")
