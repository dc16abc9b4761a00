"""The classic connectivity method (no model): a drug's score for a unit is the Pearson
correlation of the drug's measured L1000 consensus signature with the unit's signature
(tumour - normal) over the shared genes. Lower = stronger reversal, as a bundle's score.

Drugs reach their measured signature by InChIKey: library / GDSC drug -> DrugBank id
(`drugs/drugbank.tsv`) -> `l1000/consensi_drugbank.parquet` row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unicure_rt.scoring.effects import unit_centred

METHOD = "classic connectivity (Pearson)"


def signature_ids(keys: pd.Series, drugbank: pd.DataFrame, consensus: pd.DataFrame) -> pd.Series:
    """The DrugBank id with a consensus signature for each InChIKey of `keys` (NaN if none);
    of several DrugBank ids with one InChIKey, the first in id order."""
    measured = drugbank[drugbank.index.isin(consensus.index)].dropna(subset=["inchikey"])
    first = measured.sort_index().reset_index().drop_duplicates("inchikey")
    lookup = dict(zip(first["inchikey"], first["drugbank_id"], strict=True))
    return keys.map(lambda k: lookup.get(k) if isinstance(k, str) else None).astype("object")


def connectivity(measured: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """Pearson of every measured signature `[n_drugs, n_genes]` (NaN rows stay NaN) with every
    unit signature `[n_units, n_genes]`: `float64[n_units, n_drugs]`."""
    return unit_centred(signatures) @ unit_centred(measured).T
