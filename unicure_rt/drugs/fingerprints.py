"""RDKit structures: parsing with size limits, Morgan fingerprints, Tanimoto similarity and
groups of the same compound (InChIKey).

RDKit's parse and fingerprint are superlinear in molecule size, so SMILES longer than
`MAX_SMILES_CHARS` or molecules over `MAX_ATOMS` atoms count as invalid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    pass


MAX_SMILES_CHARS = 10_000  # bounds RDKit's work per molecule (its parse and fingerprint are


MAX_ATOMS = 1_000  # superlinear in size: a 20,000-atom chain takes ~1 s, 200,000 atoms minutes)


@contextlib.contextmanager
def _quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's parse warnings (invalid SMILES are reported by the caller)."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def _parse(smiles: Sequence[Any]) -> list[Any]:
    """RDKit molecules (None where the SMILES is missing, empty, invalid, or larger than
    `MAX_SMILES_CHARS` characters / `MAX_ATOMS` atoms: no drug is that large, and RDKit's work
    on such a string is unbounded)."""
    from rdkit import Chem

    mols = []
    with _quiet_rdkit():
        for s in smiles:
            if not isinstance(s, str) or not s.strip() or len(s) > MAX_SMILES_CHARS:
                mols.append(None)
                continue
            mol = Chem.MolFromSmiles(s.strip())
            mols.append(mol if mol is not None and mol.GetNumAtoms() <= MAX_ATOMS else None)
    return mols


@lru_cache(maxsize=8)
def _morgan_generator(radius: int, n_bits: int) -> Any:
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def morgan_count_fingerprints(
    smiles: Sequence[str], radius: int = 2, n_bits: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """``log1p`` Morgan count fingerprints and a validity mask.

    Returns ``(float32[n, n_bits], bool[n])``. RDKit's default Morgan generator options are
    used (no chirality, bond types on, no count simulation). Rows whose SMILES is missing or
    does not parse are all zeros and ``False`` in the mask; see :func:`invalid_smiles`.
    """
    smiles = list(smiles)
    out = np.zeros((len(smiles), n_bits), dtype=np.float32)
    valid = np.zeros(len(smiles), dtype=bool)
    generator = _morgan_generator(int(radius), int(n_bits))
    for i, mol in enumerate(_parse(smiles)):
        if mol is None:
            continue
        out[i] = generator.GetCountFingerprintAsNumPy(mol)
        valid[i] = True
    np.log1p(out, out=out)
    return out, valid


def invalid_smiles(smiles: Sequence[str], valid: np.ndarray | None = None) -> list[int]:
    """Positions of SMILES that RDKit cannot parse (or that are missing)."""
    if valid is None:
        valid = np.array([m is not None for m in _parse(list(smiles))], dtype=bool)
    return [int(i) for i in np.flatnonzero(~np.asarray(valid))]


def morgan_bit_fingerprints(
    smiles: Sequence[str], radius: int = 2, n_bits: int = 2048
) -> list[Any]:
    """RDKit ``ExplicitBitVect`` Morgan fingerprints (None for invalid SMILES)."""
    generator = _morgan_generator(int(radius), int(n_bits))
    return [None if m is None else generator.GetFingerprint(m) for m in _parse(list(smiles))]


def tanimoto_matrix(
    smiles_a: Sequence[str], smiles_b: Sequence[str], radius: int = 2, n_bits: int = 2048
) -> np.ndarray:
    """Tanimoto similarity of Morgan bit fingerprints: ``float32[len(a), len(b)]``.

    Rows/columns of SMILES that do not parse are NaN.
    """
    from rdkit import DataStructs

    fa = morgan_bit_fingerprints(smiles_a, radius, n_bits)
    fb = morgan_bit_fingerprints(smiles_b, radius, n_bits)
    out = np.full((len(fa), len(fb)), np.nan, dtype=np.float32)
    cols = [j for j, f in enumerate(fb) if f is not None]
    valid_b = [fb[j] for j in cols]
    if not valid_b:
        return out
    for i, f in enumerate(fa):
        if f is not None:
            out[i, cols] = DataStructs.BulkTanimotoSimilarity(f, valid_b)
    return out


STRUCTURE_GROUPS_NOTE = (
    "one compound = the same InChIKey, or the same name with the same InChIKey skeleton (its "
    "first block): the library lists some compounds under several ids, with and without their "
    "stereochemistry"
)


def inchikeys(values: pd.Series) -> pd.Series:
    """InChIKeys without the 'InChIKey=' prefix some tables carry; missing stays missing."""
    text = values.astype("string").str.replace("InChIKey=", "", regex=False).str.strip()
    return text.where(text.str.len() > 0)


def same_compound_groups(names: Sequence[str], inchi_keys: pd.Series | None) -> np.ndarray:
    """A group number per drug; drugs of one group are one compound (`STRUCTURE_GROUPS_NOTE`).

    Why both rules: LINCS records PD-0325901 once with and once without its stereocentre (two
    InChIKeys, one skeleton), while tretinoin and isotretinoin share a skeleton but are different
    drugs with different names. Without InChIKeys, drugs are grouped by name alone.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = pd.Series(list(names), dtype="string")
    if inchi_keys is None:
        links = [names]
    else:
        keys = inchikeys(pd.Series(list(inchi_keys), dtype="object"))
        links = [keys, names + "\n" + keys.str[:14]]  # a missing key links nothing
    n, offset, rows, nodes = len(names), len(names), [], []
    for link in links:
        codes, uniques = pd.factorize(link)
        rows.append(np.flatnonzero(codes >= 0))
        nodes.append(codes[codes >= 0] + offset)
        offset += len(uniques)
    rows_, nodes_ = np.concatenate(rows), np.concatenate(nodes)
    graph = coo_matrix((np.ones(len(rows_)), (rows_, nodes_)), shape=(offset, offset))
    return connected_components(graph, directed=False)[1][:n]
