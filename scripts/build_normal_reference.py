"""Build `unicure_rt/data/normal_tissues.parquet`, the normal-tissue references that ship.

Reads, from the shared data folder, `normal/hpa_tissue_consensus.parquet` (Human Protein Atlas
tissue consensus: 54 tissues and 7 blood cell types, nTPM) and
`normal/gtex_tissue_median_tpm.parquet` (GTEx median TPM of 29 tissues), both over the 978
L1000 landmark genes (the model's output genes: the normal reference only enters the
tumour-minus-normal signature, which is taken over those genes), and writes one table:

- one row per landmark gene (index `gene`, landmark order) and one float32 column per
  reference (`hpa:breast`, `gtex:breast`, ...: source, then the source's tissue name in lower
  case with `_` as separator), linear units as published, NaN where the source has no value
  (genes on rows keep the file small: 90 columns rather than 978);
- the Parquet file metadata key `unicure_rt.normal_reference`: JSON with `sources` (per source
  its name, release, units, license, attribution and where it was taken from; shown by
  `unicure-rt info`) and `references` (per column: `source`, `tissue`, `label` (the source's own
  name), `organ` (`brain` for the HPA brain regions, `blood` for the blood cell types, else the
  tissue) and `kind` (`tissue` or `blood cell type`)).

The HPA part is licensed CC BY-SA 3.0: `normal_tissues_LICENSE.md` (attribution and terms) and
`normal_tissues_CC-BY-SA-3.0.txt` (the legal code) ship beside the table.

Usage: python scripts/build_normal_reference.py [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
TABLE = "normal_tissues.parquet"
METADATA_KEY = b"unicure_rt.normal_reference"
HPA_BRAIN = [
    "amygdala",
    "basal_ganglia",
    "cerebellum",
    "cerebral_cortex",
    "corpus_callosum",
    "hippocampal_formation",
    "hypothalamus",
    "midbrain",
    "olfactory_region",
    "pons_and_medulla",
    "spinal_cord",
    "thalamus",
]
HPA_BLOOD = [
    "B_cells",
    "dendritic_cells",
    "granulocytes",
    "monocytes",
    "NK_cells",
    "T_cells",
    "total_PBMC",
]
SOURCES = {
    "hpa": {
        "name": "Human Protein Atlas, RNA consensus tissue gene data (rna_tissue_consensus)",
        "release": "HPA version 20 (approximately; as extracted by kircherlab/cfDNA)",
        "units": "nTPM (consensus normalised expression), linear",
        "license": "CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/)",
        "attribution": "Human Protein Atlas, proteinatlas.org (Uhlen et al., Science 2015); "
        "restricted here to the 978 L1000 landmark genes, names normalised",
        "obtained_from": "kircherlab/cfDNA repository (MIT), file "
        "hpa_tissue_consensus.parquet of the unicure-rt shared data",
    },
    "gtex": {
        "name": "GTEx tissue median TPM (sub-tissues merged)",
        "release": "GTEx 2015-era release, as packaged by Bioconductor TissueEnrich",
        "units": "TPM (median over donors), linear",
        "license": "GTEx open-access summary data (cite the GTEx Consortium, Science 2015); "
        "packaged by TissueEnrich (MIT)",
        "attribution": "The Genotype-Tissue Expression (GTEx) Project, gtexportal.org",
        "obtained_from": "Bioconductor TissueEnrich `combine-expression`, file "
        "gtex_tissue_median_tpm.parquet of the unicure-rt shared data",
    },
}


def normalise_name(name: str) -> str:
    """`Adipose.Tissue` -> `adipose_tissue`; `NK_cells` -> `nk_cells` (the lookup key)."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _references(frame: pd.DataFrame, source: str) -> dict[str, dict]:
    """The annotation of every row of one source, keyed by its column name in the table."""
    references = {}
    for label in map(str, frame.index):
        tissue = normalise_name(label)
        kind = "blood cell type" if label in HPA_BLOOD else "tissue"
        brain = label in HPA_BRAIN or tissue == "brain"
        organ = "brain" if brain else "blood" if kind != "tissue" else tissue
        references[f"{source}:{tissue}"] = {
            "source": source,
            "tissue": tissue,
            "label": label,
            "organ": organ,
            "kind": kind,
        }
    return references


def build_table(
    hpa: pd.DataFrame, gtex: pd.DataFrame, landmarks: list[str]
) -> tuple[pd.DataFrame, dict]:
    """Genes x references over the landmark genes, and the metadata; refuse a gene mismatch."""
    values, references = [], {}
    for source, frame in (("hpa", hpa), ("gtex", gtex)):
        if [str(c).upper() for c in frame.columns] != landmarks:
            raise SystemExit(f"{source}: gene columns are not the 978 landmark genes in order")
        annotation = _references(frame, source)
        if len(annotation) != len(frame):
            raise SystemExit(f"{source}: two rows normalise to the same tissue name")
        references.update(annotation)
        values.append(frame.to_numpy(dtype="float32").T)
    table = pd.DataFrame(
        np.concatenate(values, axis=1),
        index=pd.Index(landmarks, name="gene"),
        columns=list(references),
    )
    return table, {"sources": SOURCES, "references": references}


def write_table(table: pd.DataFrame, metadata: dict, out: Path) -> None:
    """Write `table` with `metadata` in the Parquet file metadata (deterministic bytes)."""
    arrow = pa.Table.from_pandas(table, preserve_index=True)
    merged = {**(arrow.schema.metadata or {}), METADATA_KEY: json.dumps(metadata).encode()}
    pq.write_table(arrow.replace_schema_metadata(merged), out, compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "unicure_rt" / "data" / TABLE)
    args = parser.parse_args()
    landmarks = (REPO / "unicure_rt" / "data" / "landmark_genes.txt").read_text().split()
    hpa = pd.read_parquet(args.data / "normal" / "hpa_tissue_consensus.parquet")
    gtex = pd.read_parquet(args.data / "normal" / "gtex_tissue_median_tpm.parquet")
    table, metadata = build_table(hpa, gtex, landmarks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, metadata, args.out)
    print(f"wrote {args.out}: {len(landmarks)} landmark genes x {table.shape[1]} references")


if __name__ == "__main__":
    main()
