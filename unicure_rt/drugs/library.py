"""The drug library file: its format, reader (`load_library`) and writer (`LibraryWriter`).

Longer than 400 lines because the format, its reader and its writer change together; the
docstring below is the format's specification.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from unicure_rt import __version__
from unicure_rt.bundle.load import creation_time
from unicure_rt.drugs.fingerprints import same_compound_groups
from unicure_rt.errors import UPDATE_HINT, UserError
from unicure_rt.outputs import LIBRARY_METADATA_KEY, refuse_existing

if TYPE_CHECKING:
    pass


LIBRARY_FORMAT_VERSION = 1


ROW_GROUP_SIZE = 8192


KEEP_IN_MEMORY_BYTES = 256 << 20


EmbeddingDtype = Literal["float32", "float16"]


_CORE_COLUMNS = ("drug_id", "name", "smiles", "antineoplastic")


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


class LibraryWriter:
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


def prepare_out(out: Path | str, force: bool, inputs: Sequence[Path]) -> Path:
    """Refuse a folder, an input of the run, or an existing file without `force`."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out '{out}' is a directory; give a file name such as 'drugs.parquet'.")
    refuse_existing(out, force, inputs)
    return out


def metadata_schema(meta: pd.DataFrame) -> pa.Schema:
    fields = [
        pa.field("drug_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("smiles", pa.string()),
        pa.field("antineoplastic", pa.bool_()),
    ]
    for column in meta.columns[len(_CORE_COLUMNS) :]:
        fields.append(pa.Schema.from_pandas(meta[[column]], preserve_index=False).field(0))
    return pa.schema(fields)
