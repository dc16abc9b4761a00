"""Build the default drug library (LINCS compounds) for a bundle.

Source: ``drugs/lincs_compounds.tsv.gz`` of the shared data (dhimmel/lincs ``pertinfo``, CC0):
20,359 LINCS compounds with ``pert_id, pert_iname, canonical_smiles, inchi_key, pubchem_cid``.

Steps: drop rows whose SMILES RDKit cannot parse (the 29 with ``-666``), deduplicate by InChIKey
(keeping a named compound over a bare BRD id), flag antineoplastic compounds, optionally cap the
number of drugs, then embed with the bundle's drug encoder
(``unicure_rt.drugs.library.build_library``).

Antineoplastic flag: a compound is matched to DrugBank (``drugs/drugbank.tsv``) by full InChIKey
or by case-insensitive name; ``True`` if a matched entry has an ATC code starting with ``L01``,
``False`` if matched entries have ATC codes but none in L01, null otherwise. Only this boolean
ships: DrugBank itself (CC BY-NC 4.0) must not, so no DrugBank column is written. The
DrugBank <-> LINCS mapping (``drugbank_lincs_mapping.tsv``) names HMS LINCS ``LSM-`` ids, none of
which occur in the Broad ``BRD-`` ids of pertinfo, so it cannot be used for this join; it is
read only to report that (``--mapping``).

Size: 20,330 drugs x 512 as float32 take ~34 MB of Parquet (random-like floats do not compress);
``--dtype float16`` (default) halves that to ~17 MB. On load the values are upcast to float32;
the largest absolute change float16 storage causes is printed (about 1e-3 for embeddings of
magnitude ~2, i.e. a relative error below 2**-11 = 4.9e-4 per value).

Usage::

    python scripts/build_drug_library.py --bundle BUNDLE --out BUNDLE/drugs.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from unicure_rt.bundle.load import load_bundle
from unicure_rt.drugs.build import build_library
from unicure_rt.drugs.fingerprints import invalid_smiles
from unicure_rt.drugs.library import load_library

SOURCE = "LINCS L1000 compounds (dhimmel/lincs pertinfo, https://github.com/dhimmel/lincs)"
LICENSE = "CC0-1.0 (structures); antineoplastic flag derived from DrugBank ATC codes"


def shared_data() -> Path:
    env = os.environ.get("UNICURE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _inchikey(values: pd.Series) -> pd.Series:
    keys = values.astype(str).str.strip().str.removeprefix("InChIKey=")
    return keys.where(keys.str.len() == 27)


def antineoplastic_flags(lincs: pd.DataFrame, drugbank: pd.DataFrame) -> pd.Series:
    """Nullable bool per LINCS row: ATC L01 among matched DrugBank entries (see module doc)."""
    bank = pd.DataFrame(
        {
            "key": _inchikey(drugbank["inchikey"]),
            "name": drugbank["name"].astype(str).str.strip().str.casefold(),
            "atc": drugbank["atc_codes"].fillna("").astype(str),
        }
    )
    bank["has_atc"] = bank["atc"].str.len() > 0
    bank["l01"] = (
        bank["atc"].str.split("|").map(lambda codes: any(c.startswith("L01") for c in codes))
    )

    def summarise(by: str) -> pd.DataFrame:
        return bank.dropna(subset=[by]).groupby(by)[["has_atc", "l01"]].any()

    by_key, by_name = summarise("key"), summarise("name")
    keys = _inchikey(lincs["inchi_key"])
    names = lincs["pert_iname"].astype(str).str.strip().str.casefold()
    has_atc = np.zeros(len(lincs), dtype=bool)
    l01 = np.zeros(len(lincs), dtype=bool)
    for table, column in ((by_key, keys), (by_name, names)):
        hit = column.isin(table.index).to_numpy()
        looked = table.reindex(column[hit])
        has_atc[hit] |= looked["has_atc"].to_numpy(dtype=bool)
        l01[hit] |= looked["l01"].to_numpy(dtype=bool)
    flags = pd.Series([None] * len(lincs), index=lincs.index, dtype=object)
    flags[has_atc] = l01[has_atc]
    return flags


def prepare_lincs_table(
    lincs_path: Path,
    drugbank_path: Path | None,
    *,
    max_drugs: int | None = None,
    mapping_path: Path | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The LINCS table ready for `build_library` (columns drug_id, name, smiles, ...) + counts."""
    lincs = pd.read_csv(lincs_path, sep="\t", dtype={"pubchem_cid": "Int64"})
    stats = {"rows": len(lincs)}
    invalid = invalid_smiles(lincs["canonical_smiles"].tolist())
    lincs = lincs.drop(index=lincs.index[invalid])
    stats["invalid_smiles"] = len(invalid)
    lincs["inchi_key"] = _inchikey(lincs["inchi_key"])
    named = lincs["pert_iname"] != lincs["pert_id"]
    lincs = lincs.assign(_named=named).sort_values("_named", ascending=False, kind="stable")
    has_key = lincs["inchi_key"].notna()
    duplicate = has_key & lincs["inchi_key"].duplicated()
    lincs = lincs[~duplicate].sort_index()
    stats["duplicates"] = int(duplicate.sum())
    if drugbank_path is not None:
        lincs["antineoplastic"] = antineoplastic_flags(lincs, pd.read_csv(drugbank_path, sep="\t"))
    else:
        lincs["antineoplastic"] = None
    if mapping_path is not None:
        mapping = pd.read_csv(mapping_path, sep="\t")
        stats["mapping_ids_in_lincs"] = int(mapping["lincs_id"].isin(lincs["pert_id"]).sum())
    if max_drugs is not None and len(lincs) > max_drugs:
        priority = (
            lincs["antineoplastic"].eq(True).astype(int) * 4
            + lincs["antineoplastic"].notna().astype(int) * 2
            + lincs["_named"].astype(int)
        )
        keep = priority.sort_values(ascending=False, kind="stable").index[:max_drugs]
        lincs = lincs.loc[sorted(keep)]
    stats["antineoplastic"] = int(lincs["antineoplastic"].eq(True).sum())
    stats["flag_known"] = int(lincs["antineoplastic"].notna().sum())
    stats["drugs"] = len(lincs)
    table = pd.DataFrame(
        {
            "drug_id": lincs["pert_id"],
            "name": lincs["pert_iname"],
            "smiles": lincs["canonical_smiles"],
            "antineoplastic": lincs["antineoplastic"],
            "inchi_key": lincs["inchi_key"],
            "pubchem_cid": lincs["pubchem_cid"].where(lincs["pubchem_cid"] > 0),
        }
    )
    return table.reset_index(drop=True), stats


def main(argv: list[str] | None = None) -> int:
    data = shared_data() / "drugs"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=None, help="bundle (default: packaged)")
    parser.add_argument("--out", type=Path, required=True, help="library file to write")
    parser.add_argument("--max-drugs", type=int, default=None, help="keep at most this many")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--force", action="store_true", help="replace --out")
    parser.add_argument("--lincs", type=Path, default=data / "lincs_compounds.tsv.gz")
    parser.add_argument("--drugbank", type=Path, default=data / "drugbank.tsv")
    parser.add_argument("--mapping", type=Path, default=data / "drugbank_lincs_mapping.tsv")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    start = time.perf_counter()
    table, stats = prepare_lincs_table(
        args.lincs,
        args.drugbank if args.drugbank.is_file() else None,
        max_drugs=args.max_drugs,
        mapping_path=args.mapping if args.mapping.is_file() else None,
    )
    summary = build_library(
        table, bundle, args.out, force=args.force, source=SOURCE, license=LICENSE, dtype=args.dtype
    )
    built = time.perf_counter() - start
    start = time.perf_counter()
    library = load_library(args.out, encoder_id=bundle.drug_encoder["id"])
    loaded = time.perf_counter() - start
    for key, value in stats.items():
        print(f"{key:>22}: {value}")
    print(
        f"{'library':>22}: {summary.path} ({summary.size_bytes / 1e6:.1f} MB, {len(library)} drugs)"
    )
    print(f"{'stored as':>22}: {summary.embedding_dtype}")
    if summary.float16_max_abs_change is not None:
        print(f"{'float16 max abs change':>22}: {summary.float16_max_abs_change:.3g}")
    print(f"{'build / load seconds':>22}: {built:.1f} / {loaded:.3f}")
    print(f"{'content sha256':>22}: {summary.content_sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
