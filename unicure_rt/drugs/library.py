"""Drugs: dose encoding, the RDKit drug encoder, and drug libraries.

Drug vectors (section 4 of the reference): a drug embedding (512 values), then
``log10(dose_um + 1)``, right-padded with the same dose value to 528 values. Combinations
concatenate two such vectors (1056 values); a control arm is a zero vector.

Drug encoders. The published model uses precomputed Uni-Mol embeddings (manifest
``drug_encoder.kind == "precomputed"``; its libraries are made with :func:`import_library`). The
bundled model encodes structures itself: an RDKit Morgan *count* fingerprint (radius 2, 2048
bits, counts, then ``log1p``) goes through a learned projection exported as the ONNX graph
``drug_encoder.onnx`` (input ``fingerprint`` float32 [batch, 2048], output ``drug_embedding``
float32 [batch, 512]); :func:`encode_smiles` runs it and :func:`build_library` uses it.

Drug library file (one Parquet file, see :func:`load_library`):

* columns ``drug_id`` (unique, non-null string), ``name`` (string), ``smiles`` (nullable string),
  ``antineoplastic`` (nullable bool: ATC L01 where known, else null), any other metadata
  columns, and last ``embedding``: a ``FixedSizeList<float16 | float32>[dim]`` column (no nulls).
  Parquet options: zstd compression, BYTE_STREAM_SPLIT encoding for the embedding values, row
  groups of 8192 rows. A fixed-size list loads ~5x faster than ``dim`` separate float columns and
  turns into a numpy array without copying (measured on 20,000 x 512: 25-36 ms vs 168 ms).
* file-level key-value metadata ``unicure_rt.library`` (JSON): ``format_version``,
  ``encoder_id``, ``dim``, ``n_drugs``, ``embedding_dtype`` (``float16`` or ``float32``),
  ``source``, ``license``, ``created`` (UTC, ISO 8601), ``content_sha256`` and a few
  informational keys (``unicure_rt_version``, ``encoder``, ``n_invalid_smiles``,
  ``float16_max_abs_change``).
* ``content_sha256`` is ``sha256(ids_digest || embedding_digest)`` in hex, where ``ids_digest``
  is the raw 32-byte SHA-256 of every ``drug_id`` in file order, each UTF-8 encoded and followed
  by one ``b"\\n"``, and ``embedding_digest`` is the raw 32-byte SHA-256 of the embedding values
  exactly as stored (``embedding_dtype``, little-endian, row-major: the ``dim`` values of row 0,
  then row 1, ...). Both parts can be computed while streaming, so writing and verifying a
  library never needs all of it in memory.

Scale: :func:`load_library` reads the metadata columns eagerly and streams the embedding column
one row group (8192 rows) at a time to verify the hash; the decoded embeddings are kept only
when they take at most ``keep_in_memory_bytes`` (256 MiB as float32, ~130,000 drugs at 512).
Larger libraries (1,000,000 compounds = 1 GB as float16 on disk, 2 GB as float32) are scored
with :meth:`DrugLibrary.iter_batches`, which decodes one batch at a time; only
:attr:`DrugLibrary.embeddings` materialises the whole matrix. Measured on 1,000,000 x 512
float16 (0.87 GB file): load + verify 3 s, a full ``iter_batches`` pass 3 s, peak RSS 650 MB
(mostly the id/name strings). Parquet pre-buffering is turned off: with it, pyarrow reads ahead
every row group and the same load peaked at 1.5 GB. Building streams too: SMILES are featurised,
encoded and written 8192 at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from unicure_rt import __version__
from unicure_rt.bundle.contract import ENCODER_GRAPH, ENCODER_INPUT, ENCODER_OUTPUT, RDKIT_KIND
from unicure_rt.bundle.load import creation_time
from unicure_rt.defaults import REFERENCE_DOSES_UM
from unicure_rt.errors import UPDATE_HINT, UserError
from unicure_rt.outputs import refuse_existing, staged_output_file

if TYPE_CHECKING:
    from unicure_rt.bundle.load import Bundle

DRUG_VECTOR_LENGTH = 528

MAX_SMILES_CHARS = 10_000  # bounds RDKit's work per molecule (its parse and fingerprint are
MAX_ATOMS = 1_000  # superlinear in size: a 20,000-atom chain takes ~1 s, 200,000 atoms minutes)

LIBRARY_FORMAT_VERSION = 1
LIBRARY_METADATA_KEY = "unicure_rt.library"
ROW_GROUP_SIZE = 8192
ENCODE_BATCH = 8192
KEEP_IN_MEMORY_BYTES = 256 << 20

PRECOMPUTED_KIND = "precomputed"

EmbeddingDtype = Literal["float32", "float16"]

_ID_CANDIDATES = ("drug_id", "pert_id", "drugbank_id", "compound_id", "id")
_NAME_CANDIDATES = ("name", "pert_iname", "drug_name", "drug", "compound", "compound_name")
_SMILES_CANDIDATES = ("smiles", "canonical_smiles", "SMILES", "canonical_SMILES", "Smiles")
_NUMERIC_METADATA = {"pubchem_cid", "cid", "antineoplastic"}
_CORE_COLUMNS = ("drug_id", "name", "smiles", "antineoplastic")


# --------------------------------------------------------------------------------------------
# Drug vectors
# --------------------------------------------------------------------------------------------


def _check_doses(dose_um: float | np.ndarray, n: int) -> np.ndarray:
    try:
        doses = np.asarray(dose_um, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(
            f"Dose {dose_um!r} is not a number. Give doses in micromolar (µM) as non-negative "
            f"numbers, e.g. one of the reference doses {REFERENCE_DOSES_UM}."
        ) from None
    if doses.ndim > 1 or (doses.ndim == 1 and doses.shape[0] != n):
        raise UserError(
            f"Got {doses.size} doses for {n} drugs. Give one dose for all drugs or exactly one "
            "dose per drug."
        )
    bad = doses[~np.isfinite(doses) | (doses < 0)]
    if bad.size:
        raise UserError(
            f"Dose {bad.ravel()[0]!r} µM is not valid: doses must be finite and non-negative "
            f"(micromolar). Use e.g. the reference doses {REFERENCE_DOSES_UM}; a control arm is "
            "not a zero dose but a zero vector (`control_vectors`)."
        )
    return np.broadcast_to(doses, (n,))


def drug_vectors(
    embeddings: np.ndarray, dose_um: float | np.ndarray, length: int = DRUG_VECTOR_LENGTH
) -> np.ndarray:
    """Drug vectors for FlexPert: ``float32[n, length]``.

    Row i is ``embeddings[i]`` (d values), then ``log10(dose + 1)`` repeated ``length - d``
    times (the dose value appended once, then right-padded with the same value). ``dose_um`` is
    one dose in µM for all rows or one dose per row.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise UserError(
            f"Drug embeddings must be a 2-D array [drugs, dim]; got shape {emb.shape}. Pass one "
            "row per drug (use `embeddings[None, :]` for a single drug)."
        )
    n, dim = emb.shape
    if dim >= length:
        raise UserError(
            f"Drug embeddings have {dim} values but the drug vector holds {length}: at least one "
            "value must be left for the dose. The library does not match this bundle; rebuild "
            "it with `unicure-rt drugs build ... --bundle B`."
        )
    doses = _check_doses(dose_um, n)
    out = np.empty((n, length), dtype=np.float32)
    out[:, :dim] = emb
    out[:, dim:] = np.log10(doses + 1.0).astype(np.float32)[:, None]
    return out


def control_vectors(n: int, length: int = DRUG_VECTOR_LENGTH) -> np.ndarray:
    """Control arm: zero vectors ``float32[n, length]``."""
    return np.zeros((n, length), dtype=np.float32)


def combination_vectors(
    a_vecs: np.ndarray | None, b_vecs: np.ndarray | None = None, n: int | None = None
) -> np.ndarray:
    """FlexPert's drug input for two arms, as the published `MultiDrugDataset` builds it.

    Each arm is ``float32[n, length]`` drug vectors (`drug_vectors`) or a control arm: ``None``
    or all-zero rows (`control_vectors`). Two drugs give ``[a | b]`` (``float32[n, 2 * length]``,
    in this order: the model is not symmetric in the arms); a drug with a control arm, in either
    position, gives that drug's own vector alone (``float32[n, length]``, not the drug plus a
    zero arm); two control arms give one zero vector (``float32[n, length]``, ``n`` rows, which
    must be given when both arms are ``None``). The width must be the same for every row of one
    call, so an arm that mixes control rows and drug rows is refused.
    """
    arms = [None if v is None else np.asarray(v, dtype=np.float32) for v in (a_vecs, b_vecs)]
    given = [v for v in arms if v is not None]
    if any(v.ndim != 2 for v in given) or (len(given) == 2 and given[0].shape != given[1].shape):
        raise UserError(
            "Both arms of a combination need drug vectors of the same shape [n, length]; got "
            f"{' and '.join(str(v.shape) for v in given)}. Build each arm with `drug_vectors` (or "
            "`control_vectors`) for the same number of rows."
        )
    drugs = []
    for v in given:
        control = ~v.any(axis=1)
        if control.any() and not control.all():
            raise UserError(
                "A combination arm mixes control rows (all zeros) with drug rows "
                f"({int(control.sum())} of {len(v)} are control). A drug with a control arm is "
                "fed as a shorter vector than two drugs: build the drug+drug and drug+control "
                "rows in separate calls."
            )
        if not control.all():
            drugs.append(v)
    if len(drugs) == 2:
        return np.concatenate(drugs, axis=1)
    if drugs:
        return drugs[0].copy()
    if given:
        return control_vectors(*given[0].shape)
    if n is None:
        raise UserError("Two control arms need the number of rows: pass n.")
    return control_vectors(n)


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The RDKit drug encoder
# --------------------------------------------------------------------------------------------


def rdkit_encoder_spec(
    graph: Path, *, radius: int = 2, n_bits: int = 2048, dim: int = 512
) -> dict[str, Any]:
    """The manifest entry ``drug_encoder`` for an RDKit-count encoder whose projection is ``graph``.

    The id names the featurisation and the sha256 of the projection graph, so a library built
    with one projection is refused by a bundle with another.
    """
    from unicure_rt.bundle.load import sha256_file

    graph = Path(graph)
    digest = sha256_file(graph)
    return {
        "id": f"{RDKIT_KIND}-r{radius}-{n_bits}-log1p-sha256:{digest}",
        "kind": RDKIT_KIND,
        "radius": radius,
        "n_bits": n_bits,
        "transform": "log1p",
        "graph": graph.name,
        "dim": dim,
    }


@dataclass(frozen=True)
class _Encoder:
    id: str
    radius: int
    n_bits: int
    dim: int
    session: Any


@lru_cache(maxsize=4)
def _session(graph: str, sha: str) -> Any:  # sha: cache key, so a changed file is reloaded
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])


def _encoder(bundle: Bundle) -> _Encoder:
    spec = bundle.manifest.get("drug_encoder")
    if not isinstance(spec, dict) or "id" not in spec:
        raise UserError(
            f"Bundle '{bundle.path}' has no `drug_encoder` entry in its manifest, so it cannot "
            "encode drugs. Re-export the bundle with `unicure-rt export`."
        )
    kind = spec.get("kind")
    if kind == PRECOMPUTED_KIND:
        raise UserError(
            f"The drug encoder of bundle '{bundle.path}' is precomputed ('{spec['id']}'): it "
            "cannot embed new structures. Make its library from the published embedding table with "
            f"`unicure-rt drugs import TABLE --encoder-id {spec['id']} --out LIB`."
        )
    if kind != RDKIT_KIND:
        raise UserError(
            f"Bundle '{bundle.path}' uses a drug encoder of kind '{kind}', which this version of "
            f"unicure-rt does not know (it knows '{RDKIT_KIND}' and '{PRECOMPUTED_KIND}'). "
            f"{UPDATE_HINT}."
        )
    if spec.get("transform", "log1p") != "log1p":
        raise UserError(
            f"Bundle '{bundle.path}' asks for fingerprint transform '{spec.get('transform')}'; "
            "only 'log1p' is supported. Upgrade unicure-rt or re-export the bundle."
        )
    rel = str(spec.get("graph", ENCODER_GRAPH))
    graph = bundle.file(rel)
    if not graph.is_file():
        raise UserError(
            f"Bundle '{bundle.path}' lacks its drug encoder graph '{graph.name}'. Restore the "
            "bundle from its source or re-export it."
        )
    sha = bundle.manifest["files"][rel]
    try:
        session = _session(str(graph), sha)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(
            f"ONNX Runtime cannot load the drug encoder '{graph}' ({exc}). The bundle is damaged "
            "or was exported for a newer ONNX Runtime: re-export it or upgrade onnxruntime."
        ) from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if ENCODER_INPUT not in inputs or ENCODER_OUTPUT not in outputs:
        raise UserError(
            f"The drug encoder '{graph}' has inputs {inputs} and outputs {outputs}; expected "
            f"input '{ENCODER_INPUT}' and output '{ENCODER_OUTPUT}'. Re-export the bundle."
        )
    return _Encoder(
        id=str(spec["id"]),
        radius=int(spec.get("radius", 2)),
        n_bits=int(spec.get("n_bits", 2048)),
        dim=int(spec.get("dim", 512)),
        session=session,
    )


def _run_encoder(encoder: _Encoder, fingerprints: np.ndarray) -> np.ndarray:
    out = np.empty((fingerprints.shape[0], encoder.dim), dtype=np.float32)
    for start in range(0, fingerprints.shape[0], ENCODE_BATCH):
        chunk = np.ascontiguousarray(fingerprints[start : start + ENCODE_BATCH], dtype=np.float32)
        (result,) = encoder.session.run([ENCODER_OUTPUT], {ENCODER_INPUT: chunk})
        if result.shape != (chunk.shape[0], encoder.dim):
            raise UserError(
                f"The drug encoder returned shape {result.shape} for {chunk.shape[0]} drugs; the "
                f"manifest promises {encoder.dim} values per drug. Re-export the bundle."
            )
        out[start : start + chunk.shape[0]] = result
    return out


def encode_smiles(smiles: Sequence[str], bundle: Bundle) -> np.ndarray:
    """Embed structures with the bundle's drug encoder: ``float32[n, dim]``.

    Every SMILES must parse; invalid ones raise a UserError that lists them.
    """
    smiles = list(smiles)
    encoder = _encoder(bundle)
    fps, valid = morgan_count_fingerprints(smiles, encoder.radius, encoder.n_bits)
    if not valid.all():
        bad = [repr(smiles[i]) for i in np.flatnonzero(~valid)[:5]]
        raise UserError(
            f"{int((~valid).sum())} of {len(smiles)} SMILES could not be parsed by RDKit or are "
            f"larger than {MAX_ATOMS:,} atoms (e.g. {', '.join(bad)}). Check them, e.g. by "
            "copying the canonical SMILES from PubChem."
        )
    return _run_encoder(encoder, fps)


# --------------------------------------------------------------------------------------------
# Library file
# --------------------------------------------------------------------------------------------


def _content_digest(ids_digest: bytes, embedding_digest: bytes) -> str:
    return hashlib.sha256(ids_digest + embedding_digest).hexdigest()


def _update_ids(hasher: Any, ids: Sequence[str]) -> None:
    if len(ids):
        hasher.update(("\n".join(ids) + "\n").encode("utf-8"))


def _stored_bytes(values: np.ndarray, dtype: str) -> bytes | memoryview:
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return memoryview(arr).cast("B")


def _fsl_to_numpy(chunk: pa.Array, dim: int) -> np.ndarray:
    """A FixedSizeList chunk as a numpy [rows, dim] array (no copy when there are no nulls)."""
    if chunk.null_count:
        raise ValueError("null embeddings")
    values = chunk.flatten()
    if values.null_count:
        raise ValueError("null embedding values")
    return values.to_numpy(zero_copy_only=False).reshape(-1, dim)


@dataclass
class DrugLibrary:
    """A verified drug library.

    ``metadata`` holds every column but the embedding (``drug_id``, ``name``, ``smiles``,
    ``antineoplastic``, ...), one row per drug in file order. ``embeddings`` is the whole
    ``float32[n, dim]`` matrix (read on first use when the library was too large to keep at
    load time); stream big libraries with :meth:`iter_batches`.
    """

    path: Path
    ids: list[str]
    names: list[str]
    metadata: pd.DataFrame
    encoder_id: str
    dim: int
    content_sha256: str
    info: dict[str, Any]
    _embeddings: np.ndarray | None = field(default=None, repr=False)
    _ids_digest: bytes = field(default=b"", repr=False)
    _lookup: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            parts = [emb for _start, emb in self.iter_batches()]
            self._embeddings = (
                np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
            )
        return self._embeddings

    def iter_batches(self, batch_size: int = ROW_GROUP_SIZE) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, float32[rows, dim])`` in file order, one batch in memory at a time.

        When the embeddings were not kept at load time they are read from the file again and
        re-hashed on the way; a file changed since loading raises a UserError at the end.
        """
        if self._embeddings is not None:
            for start in range(0, len(self), batch_size):
                yield start, self._embeddings[start : start + batch_size]
            return
        start = 0
        dtype = str(self.info["embedding_dtype"])
        emb_hash = hashlib.sha256()
        try:
            parquet = pq.ParquetFile(self.path, pre_buffer=False)
            batches = parquet.iter_batches(batch_size=batch_size, columns=["embedding"])
            for batch in batches:
                stored = _fsl_to_numpy(batch.column(0), self.dim)
                emb_hash.update(_stored_bytes(stored, dtype))
                yield start, stored.astype(np.float32, copy=False)
                start += stored.shape[0]
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise _unreadable(self.path, exc) from None
        actual = _content_digest(self._ids_digest, emb_hash.digest())
        if start != len(self) or actual != self.content_sha256:
            raise UserError(
                f"Drug library '{self.path}' changed on disk while it was in use (its sha256 is "
                f"now {actual}, it was {self.content_sha256} when loaded). Run the command again "
                "and do not rewrite a library while it is being read."
            )

    def index_of(self, key: str) -> int:
        """Row of a drug given its id or (case-insensitive) name."""
        lookup = self._lookup
        if lookup is None:
            lookup = {name.casefold(): i for i, name in reversed(list(enumerate(self.names)))}
            lookup.update({drug_id: i for i, drug_id in enumerate(self.ids)})
            self._lookup = lookup
        found = lookup.get(key, lookup.get(key.casefold()))
        if found is None:
            raise UserError(
                f"Drug '{key}' is not in library '{self.path}' ({len(self)} drugs). Check the "
                "spelling, or add it to the library (`unicure-rt drugs build`)."
            )
        return found

    def same_structure_ids(self) -> list[str]:
        """For each drug, the '|'-joined ids of every drug of this library that is the same
        compound (`same_compound_groups`), in library order; a drug alone gets its own id."""
        groups = same_compound_groups(self.names, self.metadata.get("inchi_key"))
        members = pd.Series(self.ids).groupby(groups, sort=False).agg("|".join)
        return members.loc[groups].tolist()


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


def _unreadable(path: Path, exc: Any) -> UserError:
    return UserError(
        f"Cannot read drug library '{path}' ({exc}). The file is damaged, truncated or not a "
        "Parquet file: rebuild it with `unicure-rt drugs build` or `unicure-rt drugs import`, "
        "or restore it from its source."
    )


def load_library(
    path: Path | str,
    *,
    encoder_id: str | None,
    dim: int | None = None,
    keep_in_memory_bytes: int = KEEP_IN_MEMORY_BYTES,
) -> DrugLibrary:
    """Load and verify a drug library.

    Refuses (UserError) an unreadable or truncated file, a file without the
    ``unicure_rt.library`` metadata, a newer format version, a library made for another encoder
    than ``encoder_id`` or with another embedding width than ``dim`` (``None`` skips either
    check: the model would read dose values where embedding values are missing, or the
    reverse) and any file whose drug ids or embedding bytes do not match ``content_sha256``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Drug library '{path}' does not exist. Build one with `unicure-rt drugs build "
            "SMILES_TABLE --bundle B --out LIB` (or leave the option out to use the bundled one)."
        )
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering reads ahead all row groups
        raw = (parquet.metadata.metadata or {}).get(LIBRARY_METADATA_KEY.encode())
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    if raw is None:
        raise UserError(
            f"'{path}' is a Parquet file but not a unicure-rt drug library (it has no "
            f"'{LIBRARY_METADATA_KEY}' metadata). Make a library from it with `unicure-rt drugs "
            "build` (SMILES) or `unicure-rt drugs import` (precomputed embeddings)."
        )
    try:
        info = json.loads(raw)
        version = info["format_version"]
        library_dim = int(info["dim"])
        n_drugs = int(info["n_drugs"])
        dtype = str(info["embedding_dtype"])
        expected_sha = str(info["content_sha256"])
        library_encoder = str(info["encoder_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _unreadable(path, f"bad library metadata: {exc!r}") from None
    if not isinstance(version, int):
        raise _unreadable(path, f"format_version {version!r} is not an integer")
    if version > LIBRARY_FORMAT_VERSION:
        raise UserError(
            f"Drug library '{path}' has format version {version}, newer than this unicure-rt "
            f"reads ({LIBRARY_FORMAT_VERSION}). {UPDATE_HINT}."
        )
    if encoder_id is not None and library_encoder != encoder_id:
        raise UserError(
            f"Drug library '{path}' was made for drug encoder '{library_encoder}', but the bundle "
            f"uses '{encoder_id}'; its embeddings mean nothing to this model. Rebuild the library "
            "for this bundle: `unicure-rt drugs build SMILES_TABLE --bundle B --out LIB` (or "
            "`unicure-rt drugs import TABLE --encoder-id ID --out LIB` for precomputed embeddings)."
        )
    if dim is not None and library_dim != dim:
        raise UserError(
            f"Drug library '{path}' holds embeddings of {library_dim} values, but the bundle's "
            f"drug encoder '{encoder_id}' makes {dim}; the model reads exactly {dim} embedding "
            "values and then the dose, so every drug would be scored from wrong numbers (the "
            "library names this encoder but was not made by it). Rebuild it for this bundle "
            "(`unicure-rt drugs build SMILES_TABLE --bundle B --out LIB`, or `unicure-rt drugs "
            f"import TABLE --encoder-id ID --dim {dim} --out LIB`)."
        )
    names = set(schema.names)
    emb_field = schema.field("embedding") if "embedding" in names else None
    if (
        "drug_id" not in names
        or emb_field is None
        or not pa.types.is_fixed_size_list(emb_field.type)
        or emb_field.type.list_size != library_dim
        or dtype not in ("float16", "float32")
        or emb_field.type.value_type != pa.from_numpy_dtype(np.dtype(dtype))
    ):
        raise _unreadable(path, "columns do not match the drug library layout")
    try:
        meta_columns = [c for c in schema.names if c != "embedding"]
        table = parquet.read(columns=meta_columns)
        frame = table.to_pandas()
        if table.num_rows != n_drugs or parquet.metadata.num_rows != n_drugs:
            raise ValueError(f"{table.num_rows} rows, metadata says {n_drugs}")
        ids = [str(x) for x in table.column("drug_id").to_pylist()]
        if "name" in names:
            names_list = [
                str(x) if x is not None else ids[i]
                for i, x in enumerate(table.column("name").to_pylist())
            ]
        else:
            names_list = list(ids)
        ids_hash = hashlib.sha256()
        _update_ids(ids_hash, ids)
        emb_hash = hashlib.sha256()
        keep = n_drugs * library_dim * 4 <= keep_in_memory_bytes
        kept: list[np.ndarray] = []
        rows = 0
        for batch in parquet.iter_batches(batch_size=ROW_GROUP_SIZE, columns=["embedding"]):
            stored = _fsl_to_numpy(batch.column(0), library_dim)
            emb_hash.update(_stored_bytes(stored, dtype))
            rows += stored.shape[0]
            if keep:
                kept.append(stored.astype(np.float32, copy=False))
        if rows != n_drugs:
            raise ValueError(f"{rows} embeddings for {n_drugs} drugs")
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    actual = _content_digest(ids_hash.digest(), emb_hash.digest())
    if actual != expected_sha:
        raise UserError(
            f"Drug library '{path}' failed its integrity check: the sha256 of its drug ids and "
            f"embeddings is {actual}, but the file records {expected_sha}. It was changed after "
            "it was written; rebuild it (`unicure-rt drugs build` / `drugs import`) or restore "
            "it from its source."
        )
    embeddings = None
    if keep:
        embeddings = np.concatenate(kept) if kept else np.zeros((0, library_dim), np.float32)
        if not np.isfinite(embeddings).all():
            raise _unreadable(path, "non-finite embedding values")
    return DrugLibrary(
        path=path,
        ids=ids,
        names=names_list,
        metadata=frame,
        encoder_id=library_encoder,
        dim=library_dim,
        content_sha256=actual,
        info=info,
        _embeddings=embeddings,
        _ids_digest=ids_hash.digest(),
    )


@dataclass
class LibrarySummary:
    """What :func:`build_library` / :func:`import_library` wrote."""

    path: Path
    n_drugs: int
    encoder_id: str
    content_sha256: str
    embedding_dtype: str
    size_bytes: int
    invalid: list[str] = field(default_factory=list)  # ids of rows skipped for invalid SMILES
    float16_max_abs_change: float | None = None

    @property
    def n_invalid(self) -> int:
        return len(self.invalid)


class _LibraryWriter:
    """Streams row groups into ``target`` (a staged file that becomes ``out`` on success)."""

    def __init__(
        self, out: Path, target: Path, schema: pa.Schema, dim: int, dtype: EmbeddingDtype
    ) -> None:
        self.out, self.dim, self.dtype = out, dim, dtype
        self.value_type = pa.from_numpy_dtype(np.dtype(dtype))
        self.schema = schema.append(pa.field("embedding", pa.list_(self.value_type, dim), False))
        try:
            self.writer = pq.ParquetWriter(
                target,
                self.schema,
                compression="zstd",
                use_dictionary=[f.name for f in schema],
                use_byte_stream_split=["embedding.list.element"],
            )
        except (pa.ArrowException, OSError) as exc:
            raise UserError(
                f"Cannot write the drug library next to '{out}' ({exc}). Check that the folder is "
                "writable and has free space, or choose another --out."
            ) from None
        self.ids_hash, self.emb_hash = hashlib.sha256(), hashlib.sha256()
        self.n = 0
        self.max_change = 0.0

    def write(self, meta: pd.DataFrame, embeddings: np.ndarray) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.shape != (len(meta), self.dim):
            raise UserError(
                f"Expected embeddings of shape ({len(meta)}, {self.dim}); got {emb.shape}."
            )
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            ids = ", ".join(map(str, meta["drug_id"].to_numpy()[bad][:5]))
            raise UserError(
                f"{int(bad.sum())} drugs have missing or non-finite embedding values (e.g. {ids}). "
                "Fix or drop those rows of the input table and run the command again."
            )
        with np.errstate(over="ignore"):
            stored = emb.astype(self.dtype)
        if self.dtype == "float16":
            if not np.isfinite(stored).all():
                raise UserError(
                    f"Some embedding values exceed the float16 range (|x| > 65504; largest "
                    f"{float(np.abs(emb).max()):g}). Store this library as float32 (--dtype "
                    "float32)."
                )
            if emb.size:
                change = float(np.abs(stored.astype(np.float32) - emb).max())
                self.max_change = max(self.max_change, change)
        ids = [str(x) for x in meta["drug_id"]]
        _update_ids(self.ids_hash, ids)
        self.emb_hash.update(_stored_bytes(stored, self.dtype))
        values = pa.array(stored.reshape(-1), type=self.value_type)
        column = pa.FixedSizeListArray.from_arrays(values, self.dim)
        meta_schema = self.schema.remove(len(self.schema) - 1)
        try:
            table = pa.Table.from_pandas(meta, schema=meta_schema, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise UserError(
                f"A metadata column of the table cannot be stored ({exc}). Give each column one "
                "type (numbers or text), or drop the column from the table."
            ) from None
        table = table.append_column(self.schema.field("embedding"), column)
        for start in range(0, table.num_rows, ROW_GROUP_SIZE):
            self.writer.write_table(table.slice(start, ROW_GROUP_SIZE))
        self.n += table.num_rows

    def finish(self, info: dict[str, Any]) -> tuple[str, float | None]:
        sha = _content_digest(self.ids_hash.digest(), self.emb_hash.digest())
        change = self.max_change if self.dtype == "float16" else None
        info = {
            "format_version": LIBRARY_FORMAT_VERSION,
            **info,
            "dim": self.dim,
            "n_drugs": self.n,
            "embedding_dtype": self.dtype,
            "created": creation_time(),
            "unicure_rt_version": __version__,
            "float16_max_abs_change": change,
            "content_sha256": sha,
        }
        self.writer.add_key_value_metadata({LIBRARY_METADATA_KEY: json.dumps(info)})
        self.writer.close()
        return sha, change

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _prepare_out(out: Path | str, force: bool, inputs: Sequence[Path]) -> Path:
    """Refuse a folder, an input of the run, or an existing file without `force`."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out '{out}' is a directory; give a file name such as 'drugs.parquet'.")
    refuse_existing(out, force, inputs)
    return out


def _metadata_schema(meta: pd.DataFrame) -> pa.Schema:
    fields = [
        pa.field("drug_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("smiles", pa.string()),
        pa.field("antineoplastic", pa.bool_()),
    ]
    for column in meta.columns[len(_CORE_COLUMNS) :]:
        fields.append(pa.Schema.from_pandas(meta[[column]], preserve_index=False).field(0))
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------
# Input tables
# --------------------------------------------------------------------------------------------


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV/TSV (optionally .gz) or Parquet table; bad input is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Table '{path}' does not exist. Check the path.")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if not isinstance(frame.index, pd.RangeIndex):
                frame = frame.reset_index()
        elif kind == ".csv":
            frame = pd.read_csv(path)
        elif kind in (".tsv", ".tab", ".txt"):
            frame = pd.read_csv(path, sep="\t")
        else:
            raise UserError(
                f"Cannot tell the format of '{path}' from its name. Use a .csv, .tsv or .parquet "
                "file (.csv/.tsv may be gzip-compressed, e.g. drugs.tsv.gz)."
            )
    except UserError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for bad files
        raise UserError(
            f"Cannot read table '{path}' ({type(exc).__name__}: {exc}). Check that it is a valid "
            f"{kind.lstrip('.') or 'table'} file with a header row."
        ) from None
    if frame.empty:
        raise UserError(f"Table '{path}' has no rows. Give a table with one drug per row.")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _pick_column(
    frame: pd.DataFrame, given: str | None, candidates: Sequence[str], what: str, option: str
) -> str | None:
    if given is not None:
        if given not in frame.columns:
            raise UserError(
                f"The table has no {what} column '{given}' (its columns: "
                f"{', '.join(map(str, frame.columns[:20]))}). Pass the right name with {option}."
            )
        return given
    lowered = {c.lower(): c for c in frame.columns}
    for candidate in candidates:
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def _clean_strings(values: pd.Series) -> pd.Series:
    out = values.astype(object).where(values.notna(), None)
    return out.map(lambda v: None if v is None else str(v).strip() or None)


def _metadata_frame(
    frame: pd.DataFrame,
    id_column: str,
    name_column: str | None,
    smiles_column: str | None,
    drop: Sequence[str] = (),
) -> pd.DataFrame:
    ids = _clean_strings(frame[id_column])
    missing = ids.isna()
    if missing.any():
        raise UserError(
            f"{int(missing.sum())} rows have no drug id in column '{id_column}' (first at row "
            f"{int(np.flatnonzero(missing.to_numpy())[0]) + 1}). Fill them in or drop those rows."
        )
    bad = ids[ids.str.contains("[\n\r\0]", regex=True)]
    if len(bad):
        raise UserError(
            f"Drug id {bad.iloc[0]!r} contains a line break or NUL character; drug ids must be "
            "single-line text. Fix the id column."
        )
    dupes = ids[ids.duplicated()].unique()
    if len(dupes):
        raise UserError(
            f"{len(dupes)} drug ids occur more than once in column '{id_column}' (e.g. "
            f"{', '.join(map(repr, dupes[:5]))}). Drug ids must be unique: deduplicate the table "
            "(e.g. by InChIKey) or choose another --id-column."
        )
    meta = pd.DataFrame({"drug_id": ids.to_numpy()}, index=frame.index)
    meta["name"] = (
        _clean_strings(frame[name_column]).fillna(meta["drug_id"])
        if name_column
        else (meta["drug_id"])
    )
    meta["smiles"] = _clean_strings(frame[smiles_column]) if smiles_column else None
    if "antineoplastic" in frame.columns:
        meta["antineoplastic"] = _as_nullable_bool(frame["antineoplastic"])
    else:
        meta["antineoplastic"] = None
    skip = {id_column, name_column, smiles_column, "antineoplastic", *drop, *meta.columns}
    for column in frame.columns:
        if column in skip:
            continue
        values = frame[column]
        if values.dtype == object:
            values = _clean_strings(values)
        meta[column] = values
    meta["antineoplastic"] = meta["antineoplastic"].astype(object)
    return meta.reset_index(drop=True)


def _as_nullable_bool(values: pd.Series) -> pd.Series:
    mapping = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def convert(v: Any) -> bool | None:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return None
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        key = str(v).strip().lower()
        if key in ("", "nan", "na", "none", "null"):
            return None
        if key not in mapping:
            raise UserError(
                f"Column 'antineoplastic' holds {v!r}; use true/false (or leave it empty where "
                "unknown)."
            )
        return mapping[key]

    return values.map(convert).astype(object)


# --------------------------------------------------------------------------------------------
# Building and importing libraries
# --------------------------------------------------------------------------------------------


def build_library(
    smiles_table: Path | str | pd.DataFrame,
    bundle: Bundle,
    out: Path | str,
    *,
    id_column: str | None = None,
    name_column: str | None = None,
    smiles_column: str | None = None,
    force: bool = False,
    source: str = "",
    license: str = "",
    dtype: EmbeddingDtype = "float32",
) -> LibrarySummary:
    """Embed the SMILES of a table with the bundle's drug encoder and write a library.

    Column defaults: the id is the first of drug_id/pert_id/drugbank_id/compound_id/id present
    (else the name), the name the first of name/pert_iname/drug_name/... (else the id), the
    SMILES the first of smiles/canonical_smiles. Rows whose SMILES does not parse are skipped
    and listed in the summary; an ``antineoplastic`` column and every other column are kept as
    metadata. The file appears at ``out`` only when complete (temporary file, then rename).
    """
    encoder = _encoder(bundle)
    inputs = _paths([smiles_table, bundle.path])
    out = _prepare_out(out, force, inputs)
    frame = smiles_table.copy() if isinstance(smiles_table, pd.DataFrame) else None
    if frame is None:
        frame = read_table(smiles_table)
    else:
        frame.columns = [str(c) for c in frame.columns]
    smiles_col = _pick_column(frame, smiles_column, _SMILES_CANDIDATES, "SMILES", "--smiles-column")
    if smiles_col is None:
        raise UserError(
            f"Cannot find a SMILES column in the table (columns: "
            f"{', '.join(frame.columns[:20])}). Name it with --smiles-column."
        )
    id_col = _pick_column(frame, id_column, _ID_CANDIDATES, "id", "--id-column")
    name_col = _pick_column(frame, name_column, _NAME_CANDIDATES, "name", "--name-column")
    if id_col is None and name_col is None:
        raise UserError(
            f"Cannot find a drug id or name column in the table (columns: "
            f"{', '.join(frame.columns[:20])}). Name one with --id-column or --name-column."
        )
    meta = _metadata_frame(frame, id_col or name_col, name_col, smiles_col)
    invalid: list[str] = []
    with staged_output_file(out, force=force, inputs=inputs) as target:
        writer = _LibraryWriter(out, target, _metadata_schema(meta), encoder.dim, dtype)
        _build_rows(writer, meta, encoder, invalid, smiles_col)
        info = {
            "encoder_id": encoder.id,
            "encoder": {k: v for k, v in bundle.drug_encoder.items() if k != "id"},
            "source": source or _source_name(smiles_table),
            "license": license,
            "n_invalid_smiles": len(invalid),
        }
        sha, change = writer.finish(info)
    return LibrarySummary(
        path=out,
        n_drugs=writer.n,
        encoder_id=encoder.id,
        content_sha256=sha,
        embedding_dtype=dtype,
        size_bytes=out.stat().st_size,
        invalid=invalid,
        float16_max_abs_change=change,
    )


def _paths(items: Sequence[Any]) -> list[Path]:
    return [Path(p) for p in items if isinstance(p, (str, Path))]


def _build_rows(
    writer: _LibraryWriter, meta: pd.DataFrame, encoder: _Encoder, invalid: list, smiles_col: str
) -> None:
    """Fingerprint and embed `meta` in batches into `writer`; ids of unparsable rows go to
    `invalid`. The writer is closed on any error (the staged file is then removed)."""
    try:
        for start in range(0, len(meta), ENCODE_BATCH):
            chunk = meta.iloc[start : start + ENCODE_BATCH]
            fps, valid = morgan_count_fingerprints(
                chunk["smiles"].tolist(), encoder.radius, encoder.n_bits
            )
            invalid.extend(chunk["drug_id"].to_numpy()[~valid].tolist())
            if valid.any():
                writer.write(chunk[valid], _run_encoder(encoder, fps[valid]))
        if writer.n == 0:
            raise UserError(
                f"None of the {len(meta)} SMILES in column '{smiles_col}' could be parsed by "
                "RDKit, so the library would be empty. Check that --smiles-column names the "
                "column with SMILES strings."
            )
    except BaseException:
        writer.abort()
        raise


def _source_name(table: Any) -> str:
    return Path(table).name if isinstance(table, (str, Path)) else "table"


def import_library(
    table: Path | str | pd.DataFrame,
    *,
    encoder_id: str,
    out: Path | str,
    id_column: str | None = None,
    name_column: str | None = None,
    smiles_column: str | None = None,
    dim: int | None = None,
    force: bool = False,
    source: str = "",
    license: str = "",
    dtype: EmbeddingDtype = "float32",
) -> LibrarySummary:
    """Write a library from precomputed embeddings (e.g. the published Uni-Mol table).

    The table has one row per drug: an id column (or, for Parquet, the index; for a CSV whose
    first column is unnamed, that column) and the embedding as numeric columns, in order.
    Optional name/SMILES/antineoplastic columns are kept. With ``dim`` given the number of
    embedding columns must match it. Missing or non-finite values are refused.
    """
    if not encoder_id or not str(encoder_id).strip():
        raise UserError(
            "An encoder id is required (--encoder-id), e.g. 'unimol-512' for the published "
            "Uni-Mol embeddings; it must equal the `drug_encoder.id` of the bundle that will use "
            "the library."
        )
    out = _prepare_out(out, force, _paths([table]))
    frame = table.copy() if isinstance(table, pd.DataFrame) else read_table(table)
    if isinstance(table, pd.DataFrame):
        if not isinstance(frame.index, pd.RangeIndex):
            frame = frame.reset_index()
        frame.columns = [str(c) for c in frame.columns]
    id_col = _pick_column(frame, id_column, _ID_CANDIDATES, "id", "--id-column")
    name_col = _pick_column(frame, name_column, _NAME_CANDIDATES, "name", "--name-column")
    smiles_col = _pick_column(frame, smiles_column, _SMILES_CANDIDATES, "SMILES", "--smiles-column")
    non_numeric = [
        c
        for c in frame.columns
        if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
    ]
    if id_col is None:
        id_col = name_col or next(
            (c for c in frame.columns if c.startswith("Unnamed: 0") or c == "index"),
            non_numeric[0] if non_numeric else None,
        )
    if id_col is None:
        raise UserError(
            "Cannot find the drug id column of the embedding table: every column is numeric. "
            "Put the drug ids (or names) in the first column, or name it with --id-column."
        )
    used = {id_col, name_col, smiles_col}
    emb_cols = [
        c
        for c in frame.columns
        if c not in used and c not in non_numeric and c.lower() not in _NUMERIC_METADATA
    ]
    if not emb_cols:
        raise UserError(
            "The embedding table has no numeric columns. Give one row per drug with the "
            "embedding values as numeric columns (e.g. 512 columns for Uni-Mol)."
        )
    if dim is not None and len(emb_cols) != dim:
        raise UserError(
            f"The embedding table has {len(emb_cols)} numeric columns but the encoder has {dim} "
            f"dimensions. Remove extra numeric columns (found: {', '.join(emb_cols[:5])}...) or "
            "check that the table matches the encoder."
        )
    stray = [c for c in non_numeric if c not in used and c.lower() != "antineoplastic"]
    mixed = [c for c in stray if pd.to_numeric(frame[c], errors="coerce").notna().mean() > 0.5]
    if mixed:
        raise UserError(
            f"Column(s) {', '.join(mixed[:5])} look numeric but hold text values, so they were "
            "not read as embedding columns. Fix the non-numeric cells in those columns."
        )
    meta = _metadata_frame(frame, id_col, name_col, smiles_col, drop=emb_cols)
    embeddings = frame[emb_cols].to_numpy(dtype=np.float64)
    with staged_output_file(out, force=force, inputs=_paths([table])) as target:
        writer = _LibraryWriter(out, target, _metadata_schema(meta), len(emb_cols), dtype)
        try:
            for start in range(0, len(meta), ENCODE_BATCH):
                stop = start + ENCODE_BATCH
                writer.write(meta.iloc[start:stop], embeddings[start:stop])
        except BaseException:
            writer.abort()
            raise
        info = {
            "encoder_id": str(encoder_id),
            "encoder": {"kind": PRECOMPUTED_KIND},
            "source": source or _source_name(table),
            "license": license,
            "n_invalid_smiles": 0,
        }
        sha, change = writer.finish(info)
    return LibrarySummary(
        path=out,
        n_drugs=writer.n,
        encoder_id=str(encoder_id),
        content_sha256=sha,
        embedding_dtype=dtype,
        size_bytes=out.stat().st_size,
        float16_max_abs_change=change,
    )
