"""Training data for the bundled demo model, read from the shared public data folder.

Everything here returns log2 expression on the 978 L1000 landmark genes, in the order of
`genes/landmark_genes.tsv` (the published UniCure output order). The z-score files
(`cmap_modz_n272x978.parquet`, `consensi_drugbank.parquet`) are never used as expression.

Longer than 400 lines because each shared data set has its own reader, and all of them must agree
on the gene order, the units and the structure mapping written here once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unicure_rt.bundle.schema import CHROM_CLOSE, CHROM_PREFIX, CLS, GENE_PREFIX, PAD

PLATE = "l1000/cmap_plate_LJP005_A375_24H.parquet"
BASELINES = "l1000/cell_line_baselines.parquet"
NCIH596 = "l1000/unicure_control_NCIH596.parquet"
TRANSIGEN = "l1000/transigen_pairs.parquet"
LANDMARKS = "genes/landmark_genes.tsv"
LINCS_COMPOUNDS = "drugs/lincs_compounds.tsv.gz"
DRUGBANK = "drugs/drugbank.tsv"
MODZ = "l1000/cmap_modz_n272x978.parquet"
CONSENSUS = "l1000/consensi_drugbank.parquet"
HPA_CELL_LINES = "normal/hpa_cell_lines.parquet"
HPA_TISSUES = "normal/hpa_tissue_consensus.parquet"
GTEX = "normal/gtex_tissue_median_tpm.parquet"

# The consensus signatures are pooled over cell lines and doses: they are paired with the
# `averaged` baseline (the mean cell line) at the most common LINCS dose.
CONSENSUS_DOSE_UM = 10.0
AVERAGED = "averaged"

# TranSiGen pairs carry no dose: they are treated as this dose (the most common LINCS dose).
TRANSIGEN_DOSE_UM = 10.0

SOURCES = {
    BASELINES: "TranSiGen repository, LINCS 2020 (MIT)",
    NCIH596: "UniCure reference repository test file (Apache-2.0)",
    TRANSIGEN: "TranSiGen repository example (MIT)",
    PLATE: "cmapPy repository test data, LINCS L1000 plate LJP005 A375 24 h, Level 3 (BSD-3)",
    LANDMARKS: "TranSiGen gene ids (MIT); GRCh38 positions from Bioconductor TCGAbiolinksGUI.data",
    LINCS_COMPOUNDS: "dhimmel/lincs pertinfo (CC0)",
    MODZ: "cmapR repository, Level 5 moderated z-scores (BSD-3); direction term only",
    CONSENSUS: "dhimmel/lincs consensi, DrugBank compounds (CC0); direction term only",
    HPA_CELL_LINES: "Human Protein Atlas cell lines, nTPM (CC BY-SA 3.0)",
    HPA_TISSUES: "Human Protein Atlas tissue consensus, nTPM (CC BY-SA 3.0)",
    GTEX: "GTEx tissue median TPM via Bioconductor TissueEnrich (MIT)",
    DRUGBANK: "dhimmel/drugbank: InChIKeys only, to join consensus ids to LINCS structures",
}


def default_data_dir() -> Path | None:
    """The shared data folder: env `UNICURE_SHARED_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get("UNICURE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for path in candidates:
        if (path / PLATE).is_file():
            return path
    return None


def _natural_chrom_key(chrom: str) -> tuple[int, str]:
    return (int(chrom), "") if chrom.isdigit() else (100, chrom)


def landmark_genes(data: Path) -> pd.DataFrame:
    table = pd.read_csv(Path(data) / LANDMARKS, sep="\t", dtype={"chromosome": str})
    if table["symbol"].duplicated().any() or len(table) != 978:
        raise ValueError("landmark_genes.tsv must list 978 unique symbols")
    return table


def build_vocabulary(genes: pd.DataFrame) -> dict:
    """Native vocabulary: special tokens, one open token per chromosome, one token per gene."""
    chroms = sorted(genes["chromosome"].astype(str).unique(), key=_natural_chrom_key)
    tokens = [PAD, CLS, CHROM_CLOSE]
    tokens += [CHROM_PREFIX + c for c in chroms]
    tokens += [GENE_PREFIX + s for s in genes["symbol"]]
    loci = {
        s: [str(c), int(p)]
        for s, c, p in zip(genes["symbol"], genes["chromosome"], genes["start"], strict=True)
    }
    return {"tokens": tokens, "gene_loci": loci}


@dataclass
class Profiles:
    """Expression profiles `values[n, 978]` (log2) with one id and one cell line per row."""

    values: np.ndarray
    ids: list[str]
    cell_lines: list[str]
    source: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows) -> Profiles:
        rows = np.asarray(rows)
        return Profiles(
            self.values[rows],
            [self.ids[i] for i in rows],
            [self.cell_lines[i] for i in rows],
            [self.source[i] for i in rows],
        )

    @staticmethod
    def concat(parts: list[Profiles]) -> Profiles:
        return Profiles(
            np.concatenate([p.values for p in parts]),
            sum((p.ids for p in parts), []),
            sum((p.cell_lines for p in parts), []),
            sum((p.source for p in parts), []),
        )


def _values(frame: pd.DataFrame, genes: list[str]) -> np.ndarray:
    missing = [g for g in genes if g not in frame.columns]
    if missing:
        raise ValueError(f"missing landmark genes: {missing[:5]}")
    return frame[genes].to_numpy(dtype=np.float32)


def load_plate(data: Path, genes: list[str]) -> pd.DataFrame:
    """The A375 plate: metadata columns + genes, dose as float µM (NaN for DMSO)."""
    plate = pd.read_parquet(Path(data) / PLATE)
    plate = plate.copy()
    dose = pd.to_numeric(plate["pert_dose"], errors="coerce")
    plate["dose_um"] = dose.where(dose > 0)
    _values(plate, genes)
    return plate


def plate_controls(plate: pd.DataFrame, genes: list[str]) -> Profiles:
    ctrl = plate[plate["pert_type"] == "ctl_vehicle"]
    return Profiles(
        _values(ctrl, genes),
        [str(i) for i in ctrl.index],
        ["A375"] * len(ctrl),
        ["plate_dmso"] * len(ctrl),
    )


def unperturbed_profiles(data: Path, genes: list[str]) -> Profiles:
    """Stage-1 profiles: 164 cell-line baselines, A375 DMSO wells, NCI-H596 controls and the
    TranSiGen `baseline` rows."""
    data = Path(data)
    base = pd.read_parquet(data / BASELINES)
    base = base[base.index != "averaged"]
    parts = [
        Profiles(
            _values(base, genes),
            [f"baseline:{c}" for c in base.index],
            [str(c) for c in base.index],
            ["cell_line_baselines"] * len(base),
        ),
        plate_controls(load_plate(data, genes), genes),
    ]
    h596 = pd.read_parquet(data / NCIH596)
    parts.append(
        Profiles(
            _values(h596, genes),
            [f"ncih596:{i}" for i in h596.index],
            ["NCIH596"] * len(h596),
            ["ncih596_controls"] * len(h596),
        )
    )
    parts.append(rnaseq_profiles(data, genes))
    pairs = pd.read_parquet(data / TRANSIGEN)
    b = pairs[pairs["state"] == "baseline"]
    parts.append(
        Profiles(
            _values(b, genes),
            [f"transigen:{s}" for s in b["sig_id"]],
            [str(c) for c in b["cell_line"]],
            ["transigen_baseline"] * len(b),
        )
    )
    return Profiles.concat(parts)


def rnaseq_profiles(data: Path, genes: list[str]) -> Profiles:
    """HPA cell lines and tissues and GTEx tissues (linear nTPM / TPM) as log2(TPM + 1).

    This is what the clinic side computes for a TPM input (`log2(CPM + 1)` with the library
    size over every gene, which TPM already is), so the backbone sees the patients' platform.
    GTEx's one all-NaN gene is 0 (unmeasured, like a gene a patient file lacks).
    """
    data = Path(data)
    parts = []
    for rel, source in (
        (HPA_CELL_LINES, "hpa_cell_lines"),
        (HPA_TISSUES, "hpa_tissues"),
        (GTEX, "gtex_tissues"),
    ):
        frame = pd.read_parquet(data / rel)
        linear = np.nan_to_num(_values(frame, genes), nan=0.0).clip(min=0.0)
        parts.append(
            Profiles(
                np.log2(linear + 1.0).astype(np.float32),
                [f"{source}:{i}" for i in frame.index],
                [str(i) for i in frame.index],
                [source] * len(frame),
            )
        )
    return Profiles.concat(parts)


def lincs_compounds(data: Path) -> pd.DataFrame:
    return pd.read_csv(Path(data) / LINCS_COMPOUNDS, sep="\t")


@dataclass
class Condition:
    """One treated group: a control set, a drug at a dose, and the observed treated profiles."""

    key: str  # unique condition id
    source: str  # "plate" or "transigen"
    cell_line: str
    drug: str  # drug key (pert_id for the plate, smiles-derived id for TranSiGen)
    smiles: str
    dose_um: float
    control: str  # key into the control sets
    treated: np.ndarray  # [n_wells, 978]
    name: str = ""  # drug name (pert_iname) where known
    pert_type: str = "trt_cp"  # plate: trt_cp (kinase inhibitors) / trt_poscon; or "transigen"
    # "expression": `treated` is log2 expression (all loss terms); "signature": `treated` is one
    # z-score signature [1, 978], a direction of change (direction term only)
    kind: str = "expression"


@dataclass
class TreatedData:
    conditions: list[Condition]
    controls: dict[str, Profiles]  # control key -> control profiles
    unresolved: list[str]  # plate drugs without a SMILES (left out)
    mapping: dict = None  # how many signature compounds mapped to a structure, per source


def plate_smiles(plate: pd.DataFrame, compounds: pd.DataFrame) -> dict[str, str | None]:
    """pert_id -> canonical SMILES (None where LINCS has no entry) for the plate's treated drugs."""
    lookup = dict(zip(compounds["pert_id"], compounds["canonical_smiles"], strict=True))
    treated = plate[plate["pert_type"].isin(["trt_cp", "trt_poscon"])]
    return {pid: lookup.get(pid) for pid in sorted(treated["pert_id"].unique())}


def treated_data(data: Path, genes: list[str], *, include_poscon: bool = True) -> TreatedData:
    """Stage-2 groups: the A375 plate (one group per drug and dose, control = the DMSO wells)
    and the TranSiGen pairs (control = the pair's baseline, dose = TRANSIGEN_DOSE_UM)."""
    data = Path(data)
    plate = load_plate(data, genes)
    smiles = plate_smiles(plate, lincs_compounds(data))
    kinds = ["trt_cp", "trt_poscon"] if include_poscon else ["trt_cp"]
    treated = plate[plate["pert_type"].isin(kinds)]
    conditions = []
    unresolved = sorted(p for p, s in smiles.items() if s is None and p in set(treated["pert_id"]))
    for (pid, dose, kind), group in treated.groupby(["pert_id", "dose_um", "pert_type"], sort=True):
        if smiles.get(pid) is None:
            continue
        conditions.append(
            Condition(
                key=f"plate:{pid}@{dose:g}",
                source="plate",
                cell_line="A375",
                drug=pid,
                smiles=smiles[pid],
                dose_um=float(dose),
                control="plate_dmso",
                treated=_values(group, genes),
                pert_type=str(kind),
                name=str(group["pert_iname"].iloc[0]),
            )
        )
    controls = {"plate_dmso": plate_controls(plate, genes)}
    pairs = pd.read_parquet(data / TRANSIGEN)
    drug_ids = {s: f"transigen_drug{i}" for i, s in enumerate(sorted(pairs["smiles"].unique()))}
    for sig, group in pairs.groupby("sig_id", sort=True):
        base = group[group["state"] == "baseline"]
        trt = group[group["state"] == "treated"]
        if len(base) != 1 or len(trt) != 1:
            continue
        ctrl_key = f"transigen:{sig}"
        controls[ctrl_key] = Profiles(
            _values(base, genes),
            [ctrl_key],
            [str(base["cell_line"].iloc[0])],
            ["transigen_baseline"],
        )
        s = str(trt["smiles"].iloc[0])
        conditions.append(
            Condition(
                key=f"transigen:{sig}",
                source="transigen",
                cell_line=str(trt["cell_line"].iloc[0]),
                drug=drug_ids[s],
                smiles=s,
                dose_um=TRANSIGEN_DOSE_UM,
                control=ctrl_key,
                treated=_values(trt, genes),
                pert_type="transigen",
            )
        )
    signatures, sig_controls, mapping = signature_conditions(data, genes)
    controls.update(sig_controls)
    return TreatedData(conditions + signatures, controls, unresolved, mapping)


def _inchikey(values: pd.Series) -> pd.Series:
    return values.astype(str).str.replace("InChIKey=", "", regex=False).str.strip()


def _dose_um(text: str) -> float:
    """`pert_idose` such as '10 µM' or '500 nM' -> µM."""
    number, unit = str(text).replace("\ufffd", "µ").split()[:2]
    return float(number) * (1e-3 if unit.lower().startswith("n") else 1.0)


def signature_conditions(data: Path, genes: list[str]) -> tuple[list[Condition], dict, dict]:
    """Direction-only groups from the z-score files, with their control sets and mapping counts.

    cmap_modz rows: the named cell line's baseline (else the averaged one), the row's dose.
    consensi_drugbank rows: the averaged baseline at CONSENSUS_DOSE_UM. DrugBank ids reach a
    LINCS structure by InChIKey (drugbank.tsv -> lincs_compounds.tsv.gz); unmapped rows are
    left out.
    """
    data = Path(data)
    compounds = lincs_compounds(data).dropna(subset=["canonical_smiles"])
    base = pd.read_parquet(data / BASELINES)
    controls = {
        f"baseline:{line}": Profiles(
            _values(base.loc[[line]], genes), [f"baseline:{line}"], [str(line)], ["baseline"]
        )
        for line in base.index
    }
    conditions: list[Condition] = []
    modz = pd.read_parquet(data / MODZ)
    by_id = dict(zip(compounds["pert_id"], compounds["canonical_smiles"], strict=True))
    by_name = dict(
        zip(compounds["pert_iname"].str.lower(), compounds["canonical_smiles"], strict=False)
    )
    modz_mapped = 0
    for sig, row in modz.sort_index().iterrows():
        smiles = by_id.get(row["pert_id"]) or by_name.get(str(row["pert_iname"]).lower())
        if smiles is None:
            continue
        modz_mapped += 1
        line = row["cell_id"] if row["cell_id"] in base.index else AVERAGED
        conditions.append(
            Condition(
                key=f"modz:{sig}",
                source="modz",
                cell_line=str(line),
                drug=str(row["pert_iname"]),
                smiles=smiles,
                dose_um=_dose_um(row["pert_idose"]),
                control=f"baseline:{line}",
                treated=_values(modz.loc[[sig]], genes),
                name=str(row["pert_iname"]),
                pert_type="trt_cp",
                kind="signature",
            )
        )
    consensus = pd.read_parquet(data / CONSENSUS).sort_index()
    bank = pd.read_csv(data / DRUGBANK, sep="\t", usecols=["drugbank_id", "name", "inchikey"])
    bank = bank.dropna(subset=["inchikey"]).assign(key=lambda t: _inchikey(t["inchikey"]))
    keyed = compounds.assign(key=_inchikey(compounds["inchi_key"])).drop_duplicates("key")
    joined = bank.merge(keyed[["key", "canonical_smiles"]], on="key").drop_duplicates("drugbank_id")
    smiles_of = dict(zip(joined["drugbank_id"], joined["canonical_smiles"], strict=True))
    names = dict(zip(bank["drugbank_id"], bank["name"], strict=True))
    for db_id in consensus.index:
        if db_id not in smiles_of:
            continue
        conditions.append(
            Condition(
                key=f"consensus:{db_id}",
                source="consensus",
                cell_line=AVERAGED,
                drug=str(db_id),
                smiles=smiles_of[db_id],
                dose_um=CONSENSUS_DOSE_UM,
                control=f"baseline:{AVERAGED}",
                treated=_values(consensus.loc[[db_id]], genes),
                name=str(names.get(db_id, db_id)),
                pert_type="trt_cp",
                kind="signature",
            )
        )
    mapping = {
        "modz_signatures": len(modz),
        "modz_mapped": modz_mapped,
        "consensus_compounds": len(consensus),
        "consensus_mapped_by_inchikey": int(consensus.index.isin(list(smiles_of)).sum()),
    }
    return conditions, controls, mapping


def antineoplastic_flags(data: Path, compounds: pd.DataFrame) -> pd.Series:
    """ATC L01 flag per LINCS compound via DrugBank (matched on InChIKey).

    True/False where the compound matches a DrugBank entry with ATC codes, else None. Only the
    derived flag is kept; no DrugBank data is shipped.
    """
    path = Path(data) / DRUGBANK
    flags = pd.Series([None] * len(compounds), index=compounds.index, dtype=object)
    if not path.is_file():
        return flags
    db = pd.read_csv(path, sep="\t", usecols=["inchikey", "atc_codes"])
    db = db.dropna(subset=["inchikey", "atc_codes"])
    db["key"] = db["inchikey"].str.replace("InChIKey=", "", regex=False).str.strip()
    codes = db.groupby("key")["atc_codes"].apply(lambda s: "|".join(s.astype(str)))
    is_l01 = codes.map(lambda c: any(code.strip().startswith("L01") for code in c.split("|")))
    keys = compounds["inchi_key"].astype(str).str.replace("InChIKey=", "", regex=False).str.strip()
    matched = keys.map(is_l01)
    return matched.astype(object).where(matched.notna(), None)
