"""Build the example patient files in `examples/` from the real public data in ../shared/data.

- `tcga_brca.h5ad`: TCGA breast cancer RSEM counts (TCGAbiolinks `dataBRCA`, TCGA open
  access), 10 samples x 20,530 genes (`SYMBOL|ENTREZ` labels, as published); obs `sample`,
  `condition` (`tumour` for `-01A` primary tumours, `normal` for `-11A` solid tissue normals).
- `oligodendroglioma.h5ad`: 184 single cells from oligodendroglioma tumours (Tirosh et al.
  2016, infercnvpy example data, BSD-3), less the 19 microglia/macrophages (neither tumour nor
  the normal reference); obs `patient` (the cell-id prefix), `cell_type`, and `condition`
  (`tumour` for malignant cells, `normal` for non-malignant oligodendrocytes).

Usage: python scripts/build_examples.py [--data ../shared/data] [--out examples]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]


def tcga_example(data: Path) -> anndata.AnnData:
    counts = pd.read_parquet(data / "patients" / "tcga_brca_rsem_counts.parquet")
    samples = counts.columns.astype(str)
    condition = np.where(samples.str[13:15] == "11", "normal", "tumour")
    obs = pd.DataFrame({"sample": samples, "condition": condition}, index=samples)
    var = pd.DataFrame(index=counts.index.astype(str))
    return anndata.AnnData(X=counts.T.to_numpy(np.float32), obs=obs, var=var)


def oligodendroglioma_example(data: Path) -> anndata.AnnData:
    adata = anndata.read_h5ad(data / "singlecell" / "oligodendroglioma.h5ad")
    cell_type = adata.obs["cell_type"].astype(str)
    condition = np.select(
        [cell_type.str.startswith("malignant"), cell_type.str.startswith("Oligodendrocytes")],
        ["tumour", "normal"],
        "other",
    )
    obs = pd.DataFrame(
        {
            "patient": adata.obs_names.str.split("_").str[0],
            "cell_type": cell_type.to_numpy(),
            "condition": condition,
        },
        index=adata.obs_names,
    )
    var = adata.var[["chromosome", "start", "end"]].copy()
    keep = condition != "other"
    matrix = sparse.csr_matrix(adata.X, dtype=np.float32)[keep]
    return anndata.AnnData(X=matrix, obs=obs[keep], var=var)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "examples")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in (
        ("tcga_brca", tcga_example),
        ("oligodendroglioma", oligodendroglioma_example),
    ):
        adata = build(args.data)
        path = args.out / f"{name}.h5ad"
        adata.write_h5ad(path, compression="gzip")
        conditions = adata.obs["condition"].value_counts().to_dict()
        print(f"wrote {path}: {adata.n_obs} x {adata.n_vars}, conditions {conditions}")


if __name__ == "__main__":
    main()
