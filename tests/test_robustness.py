"""Bad input, property-based: every generated file ends in a correct result or a clean error.

Hypothesis generates AnnData files and CSV/TSV/Parquet tables with NaN/inf, negative values,
all-zero profiles, duplicate or empty gene names, mixed gene id types, unicode sample ids, wrong
dtypes, empty groups, one cell or one gene, and valid files with truncated or flipped bytes; each
is driven through the real CLI (`score`, `embed`). The contract checked for every case:

- exit 0 and a complete output (ranking.parquet, ranking.csv and run.json, one finite score per
  profile x drug; or the embedding file), and nothing else beside it; or
- exit 2 and a one-paragraph message starting with "Error:", no traceback, and nothing left in
  the output's parent directory (no output folder, no `.partial` staging folder or file).

Inputs that can only be wrong (NaN, negative, all zeros, text or bool values, a tumour equal to
its normal, ...) must be refused; clean inputs over enough landmark genes must succeed.
`GENERATED` counts the cases that ran (printed by the last test).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse
from typer.testing import CliRunner

from unicure_rt.cli.app import app
from unicure_rt.patients.genes import gene_table

runner = CliRunner()
GENERATED: Counter = Counter()
OUTCOMES: Counter = Counter()

LANDMARKS = [
    line.strip()
    for line in (Path(__file__).parents[1] / "unicure_rt" / "data" / "landmark_genes.txt")
    .read_text()
    .splitlines()
    if line.strip()
]
_TABLE = gene_table().set_index("symbol")
OTHER_GENES = [g for g in _TABLE.index[:400] if g not in set(LANDMARKS)][:60]
N_DRUGS = 50
FAST = ("--draws", "1", "--doses", "1", "--threads", "1")

# UNICURE_ROBUSTNESS_SCALE=N runs N times more random (not derandomized) examples: a deeper
# search than the fixed, reproducible default.
SCALE = int(os.environ.get("UNICURE_ROBUSTNESS_SCALE", "1"))
SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    "derandomize": SCALE == 1,
    "database": None,
}


def examples(n: int) -> int:
    return n * SCALE


# Sample ids: any text but surrogates (not encodable in a file) and NUL; `[` `]` are rich markup,
# a known display bug covered by test_markup_in_sample_ids_is_printed_verbatim.
SAMPLE_IDS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00[]"),
    min_size=1,
    max_size=6,
)
GARBAGE = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)
MUST_FAIL = {
    "nullable_na",
    "nan",
    "inf",
    "-inf",
    "negative",
    "zero_profile",
    "zero_matrix",
    "tumour_is_normal",
    "ambiguous",
    "bool",
    "text",
}
DEFECTS = [None] * 8 + ["huge", "tiny", *sorted(MUST_FAIL - {"nullable_na"})]
VALUE_DEFECTS = {"nan", "inf", "-inf", "negative", "zero_matrix", "ambiguous", "bool"}
# AnnData: no text matrix; a zero cell is pooled with the other cells of its patient
H5AD_DEFECTS = [d for d in DEFECTS if d != "text"] + ["missing_patient"]
H5AD_MUST_FAIL = (MUST_FAIL - {"text", "zero_profile", "nullable_na"}) | {"missing_patient"}


# --- building inputs -----------------------------------------------------------------------------


def gene_label(symbol: str, form: str, rng: np.random.Generator) -> str:
    """One label of `symbol` in the id form `form` (`mixed`: a random form per label)."""
    if form == "mixed":
        form = str(rng.choice(["symbol", "lower", "ensembl", "pair", "qpair"]))
    row = _TABLE.loc[symbol]
    if form == "lower":
        return symbol.lower()
    if form == "ensembl":
        return f"{row['ensembl_id']}.{rng.integers(1, 20)}"
    if form == "pair":
        return f"{symbol}|{int(row['entrez_id'])}"
    if form == "qpair":
        return f"?|{int(row['entrez_id'])}"
    return symbol


@dataclass
class Genes:
    labels: list[str]
    n_landmarks: int  # distinct landmark genes among the labels

    def __repr__(self) -> str:
        return f"Genes({len(self.labels)} labels, e.g. {self.labels[:4]}, {self.n_landmarks=})"


def pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(0, len(options)))]


@st.composite
def gene_sets(draw) -> Genes:
    """Gene labels: structure from a seed (spread evenly), odd labels from hypothesis."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_landmarks = pick(rng, [0, 1, 40, 600, 978, 978])
    form = pick(rng, ["symbol", "lower", "ensembl", "pair", "qpair", "mixed"])
    picked = list(rng.choice(LANDMARKS, size=n_landmarks, replace=False))
    picked += list(rng.choice(OTHER_GENES, size=int(rng.integers(0, 6)), replace=False))
    if rng.random() < 0.5 and picked:  # the same gene under two labels: summed
        picked += list(rng.choice(picked, size=min(3, len(picked)), replace=False))
    labels = [gene_label(g, form, rng) for g in picked]
    labels += draw(st.lists(GARBAGE, max_size=3))  # unresolvable, possibly empty, names
    if not labels:
        labels = ["not-a-gene"]
    order = rng.permutation(len(labels))
    return Genes([labels[i] for i in order], n_landmarks)


def base_values(rng, shape, scale: str) -> np.ndarray:
    counts = rng.poisson(rng.uniform(0.5, 20), size=shape).astype(np.float64)
    counts[:, rng.integers(0, shape[1])] += 1  # no all-zero profile by chance
    if scale == "counts":
        return counts
    if scale == "linear":  # TPM-like: non-integer, max above 100
        linear = counts * 10.37 + 0.01
        linear[0, 0] = max(linear.max(), 150.37)
        return linear
    return np.log2(counts + 1.0) + 0.001  # log2: non-integer, max at most 30


def apply_defect(values: np.ndarray, defect: str | None, rng, normal_rows) -> np.ndarray:
    """Corrupt `values` (observations x genes) as `defect` says; `normal_rows` mark normals."""
    values = values.copy()
    i, j = rng.integers(0, values.shape[0]), rng.integers(0, values.shape[1])
    if defect == "nan":
        values[i, j] = np.nan
    elif defect == "inf":
        values[i, j] = np.inf
    elif defect == "-inf":
        values[i, j] = -np.inf
    elif defect == "negative":
        values[i, j] = -0.5
    elif defect == "zero_profile":
        values[i, :] = 0
    elif defect == "zero_matrix":
        values[:] = 0
    elif defect == "ambiguous":
        values = values / max(values.max(), 1) * 55 + 0.25  # non-integer, max in (30, 100]
    elif defect == "huge":
        values[i, j] = 1e300
    elif defect == "tiny":
        values = values * 1e-300
    elif defect == "tumour_is_normal":
        normal = values[np.flatnonzero(normal_rows)[0]]
        values[:] = normal
    return values


@dataclass
class Outcome:
    exit_code: int
    output: str


def invoke(*args) -> Outcome:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        text = "".join(traceback.format_exception(result.exception))
        return Outcome(result.exit_code, result.output + "\nTraceback:\n" + text)
    return Outcome(result.exit_code, result.output)


def assert_clean_error(outcome: Outcome, parent: Path) -> None:
    text = outcome.output
    assert outcome.exit_code == 2, f"exit {outcome.exit_code}: {text}"
    assert text.strip().startswith("Error:"), text
    assert "Traceback" not in text, text
    assert "\n\n" not in text.strip(), f"not one paragraph: {text}"
    left = list(parent.iterdir()) if parent.exists() else []
    assert not left, f"left behind: {left}"


def reject_constant(name: str):
    raise AssertionError(f"run.json holds {name}: not valid JSON")


def check_score(outcome: Outcome, parent: Path, out: Path, n_profiles: int | None) -> str:
    """The score contract; returns `ok` or `error`."""
    if outcome.exit_code != 0:
        assert_clean_error(outcome, parent)
        OUTCOMES["score error"] += 1
        return "error"
    assert "Traceback" not in outcome.output, outcome.output
    assert sorted(p.name for p in parent.iterdir()) == [out.name], list(parent.iterdir())
    assert sorted(p.name for p in out.iterdir()) == ["ranking.csv", "ranking.parquet", "run.json"]
    ranking = pd.read_parquet(out / "ranking.parquet")
    run = json.loads((out / "run.json").read_text(), parse_constant=reject_constant)
    profiles = ranking["profile"].nunique()
    assert len(ranking) == profiles * N_DRUGS and profiles == len(run["profiles"])
    if n_profiles is not None:
        assert profiles == n_profiles
    assert np.isfinite(ranking["score"]).all(), "a score is NaN or infinite"
    for _, rows in ranking.groupby("profile"):
        assert sorted(rows["rank"]) == list(range(1, N_DRUGS + 1))
    OUTCOMES["score ok"] += 1
    return "ok"


def check_embed(outcome: Outcome, parent: Path, out: Path, n_rows: int | None) -> str:
    if outcome.exit_code != 0:
        assert_clean_error(outcome, parent)
        OUTCOMES["embed error"] += 1
        return "error"
    assert "Traceback" not in outcome.output, outcome.output
    assert [p.name for p in parent.iterdir()] == [out.name], list(parent.iterdir())
    if out.suffix == ".parquet":
        table = pd.read_parquet(out)
        embeddings = table[[c for c in table if c.startswith("emb_")]].to_numpy()
    else:
        import anndata

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            embeddings = anndata.read_h5ad(out).obsm["X_unicure"]
    if n_rows is not None:
        assert len(embeddings) == n_rows
    assert np.isfinite(embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    OUTCOMES["embed ok"] += 1
    return "ok"


# --- tables --------------------------------------------------------------------------------------


def write_table(frame: pd.DataFrame, path: Path, genes_on_rows: bool, defect=None) -> None:
    """`frame` is samples x genes; written with genes on rows or on columns. Column-type
    defects change the first column as written: `text` (a text cell among numbers),
    `nullable_na` (a nullable integer column with a missing value), `string_column` (numbers
    stored as text: a CSV cannot tell, a Parquet file can)."""
    frame = frame.T.copy() if genes_on_rows else frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    if path.name.endswith(".parquet") and frame.columns.duplicated().any():
        frame = frame.loc[:, ~frame.columns.duplicated()]  # Parquet cannot repeat a column
    first = frame.columns[0]
    if defect in ("text", "string_column"):
        frame[first] = frame[first].astype(str)
        if defect == "text":
            frame.iloc[0, 0] = "12,3 high"
    elif defect == "nullable_na":
        column = pd.array(np.round(frame[first].to_numpy(np.float64)), dtype="Int64")
        column[0] = pd.NA
        frame[first] = column
    if path.name.endswith(".parquet"):
        frame.index = frame.index.astype(str)
        frame.to_parquet(path)
    elif path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            frame.to_csv(handle, sep="\t" if ".tsv" in path.name else ",")
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def typed(values: np.ndarray, dtype: str, scale: str, rng) -> pd.DataFrame | np.ndarray:
    whole = np.isfinite(values).all() and np.array_equal(values, np.round(values))
    if dtype == "int" and whole:
        return values.astype(np.int64)
    if dtype in ("float32", "float16"):
        with np.errstate(over="ignore"):
            return values.astype(dtype)
    if dtype == "bool":
        return values > 0
    return values


TABLE_DTYPES = ["float64", "float64", "int", "float32", "bool"]


@st.composite
def table_cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_tumour = int(rng.integers(1, 4))
    ids = draw(st.lists(SAMPLE_IDS, min_size=n_tumour + 1, max_size=n_tumour + 1, unique=True))
    return {
        "suffix": pick(rng, [".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet", ".parquet"]),
        "genes_on_rows": bool(rng.random() < 0.5),
        "ids": ids,
        "genes": draw(gene_sets()),
        "scale": pick(rng, ["counts", "linear", "log"]),
        "dtype": pick(rng, TABLE_DTYPES),
        "defect": pick(rng, [*DEFECTS, "nullable_na", "string_column"]),
        "reference": pick(rng, ["where", "file"]),
        "output": pick(rng, [["-q"], ["--json"], []]),
        "seed": seed,
    }


def build_table_case(case: dict, folder: Path) -> tuple[list, bool, int]:
    """Write the input files; return the CLI arguments, whether the case must fail and the
    number of tumour profiles."""
    rng, ids, genes = np.random.default_rng(case["seed"]), case["ids"], case["genes"]
    normal_rows = np.zeros(len(ids), dtype=bool)
    normal_rows[-1] = True
    values = base_values(rng, (len(ids), len(genes.labels)), case["scale"])
    defect, dtype = case["defect"], case["dtype"]
    if defect == "bool":
        dtype = "bool"
    if dtype == "bool":
        defect = "bool"
    values = apply_defect(values, defect, rng, normal_rows)
    frame = pd.DataFrame(typed(values, dtype, case["scale"], rng), index=ids, columns=genes.labels)
    path = folder / f"tumour{case['suffix']}"
    if case["reference"] == "where":
        write_table(frame, path, case["genes_on_rows"], defect)
        args = [path, "--normal-where", f"sample={ids[-1]}"]
    else:
        normal_path = folder / f"normal{case['suffix']}"
        write_table(frame[~normal_rows], path, case["genes_on_rows"], defect)
        write_table(frame[normal_rows], normal_path, case["genes_on_rows"])
        args = [path, "--normal", normal_path]
    parquet_text = defect == "string_column" and case["suffix"] == ".parquet"
    must_fail = defect in MUST_FAIL or parquet_text or genes.n_landmarks < 489
    return args, must_fail, len(ids) - 1


def clean_ids(ids: list[str]) -> bool:
    """Ids that survive a round trip through every table format and --normal-where unchanged."""
    return all(
        i == i.strip()
        and i.isprintable()
        and i.lower() not in {"nan", "na", "n/a", "null", "none", "<na>", "#n/a", "-nan", ""}
        and not i.startswith("#")
        for i in ids
    )


def expected_ok(case: dict, must_fail: bool) -> bool:
    """Whether a case must succeed: clean values over enough landmark genes and ids that
    cannot be mistaken for anything else. Other cases may go either way."""
    ids = case["ids"]
    return (
        not must_fail
        and case["defect"] is None
        and case["dtype"] != "bool"
        and clean_ids(ids)
        and not any(i.upper() in _TABLE.index for i in ids)
        and not any(c.isdigit() for i in ids for c in i if not c.isascii())
    )


@settings(max_examples=examples(60), **SETTINGS)
@given(case=table_cases())
def test_tables_end_in_a_result_or_a_clean_error(tiny_bundle, case):
    GENERATED["score table"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        folder, parent = Path(tmp) / "in", Path(tmp) / "results"
        folder.mkdir()
        parent.mkdir()
        args, must_fail, n_tumour = build_table_case(case, folder)
        out = parent / "out"
        outcome = invoke(
            "score", *args, "--bundle", tiny_bundle, "--out", out, *case["output"], *FAST
        )
        result = check_score(outcome, parent, out, n_tumour)
        if must_fail:
            assert result == "error", f"accepted a bad input ({case['defect']}): {outcome.output}"
        if expected_ok(case, must_fail):
            assert result == "ok", outcome.output


# --- AnnData -------------------------------------------------------------------------------------


@st.composite
def h5ad_cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_patients = int(rng.integers(1, 4))
    patients = draw(st.lists(SAMPLE_IDS, min_size=n_patients, max_size=n_patients, unique=True))
    # cells per (patient, condition); 0 leaves a patient without tumour or normal cells
    sizes = [int(n) for n in rng.integers(0, 4, size=2 * n_patients)]
    sizes[0], sizes[-1] = max(sizes[0], 1), max(sizes[-1], 1)
    return {
        "patients": patients,
        "sizes": sizes,
        "genes": draw(gene_sets()),
        "scale": pick(rng, ["counts", "linear", "log"]),
        "dtype": pick(rng, ["float32", "float64", "float64", "int", "float16", "bool"]),
        "defect": pick(rng, H5AD_DEFECTS),
        "matrix": pick(rng, ["dense", "csr", "csc"]),
        "source": pick(rng, ["X", "X", "counts", "raw", "other_layer"]),
        "groups": draw(st.lists(SAMPLE_IDS, min_size=1, max_size=3, unique=True))
        if rng.random() < 0.4
        else None,
        "min_cells": int(rng.integers(1, 4)),
        "seed": seed,
    }


def build_h5ad(case: dict, path: Path) -> tuple[bool, int]:
    """Write the AnnData file of `case`; return whether it must be refused and its n_obs."""
    import anndata

    rng, genes = np.random.default_rng(case["seed"]), case["genes"]
    groups = [g for g in case["groups"] or ["a"] if g != "never-used"] or ["a"]
    patient, condition = [], []
    for k, n in enumerate(case["sizes"]):
        patient += [case["patients"][k // 2]] * n
        condition += ["tumour" if k % 2 == 0 else "normal"] * n
    obs = pd.DataFrame(
        {
            "patient": pd.Categorical(patient, categories=[*case["patients"], "never-seen"]),
            "condition": condition,
            "cluster": pd.Categorical(  # with an empty group
                rng.choice(groups, size=len(patient)), categories=[*groups, "never-used"]
            ),
        },
        index=[f"cell{i}" for i in range(len(patient))],
    )
    defect, dtype = case["defect"], case["dtype"]
    if dtype == "bool":
        defect = "bool"
    normal_rows = obs["condition"].to_numpy() == "normal"
    values = base_values(rng, (len(obs), len(genes.labels)), case["scale"])
    values = apply_defect(values, None if defect == "bool" else defect, rng, normal_rows)
    if defect == "missing_patient":
        obs["patient"] = obs["patient"].astype(object)
        obs.iloc[0, 0] = None
    matrix = typed(values, "bool" if defect == "bool" else dtype, case["scale"], rng)
    if case["matrix"] != "dense":
        if matrix.dtype == np.float16:  # scipy has no float16 sparse matrices
            matrix = matrix.astype(np.float32)
        matrix = getattr(sparse, f"{case['matrix']}_matrix")(matrix)
    var = pd.DataFrame(index=pd.Index(genes.labels, dtype=object))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case["source"] == "raw":
            adata = anndata.AnnData(X=matrix, obs=obs, var=var)
            adata.raw = adata.copy()
            adata.X = np.full(matrix.shape, -1.0, dtype=np.float32)  # scaled data in X
        elif case["source"] == "counts":
            adata = anndata.AnnData(X=np.full(matrix.shape, -1.0), obs=obs, var=var)
            adata.layers["counts"] = matrix
        elif case["source"] == "other_layer":  # no X, no counts layer, no raw
            adata = anndata.AnnData(obs=obs, var=var)
            adata.layers["normalised"] = matrix
        else:
            adata = anndata.AnnData(X=matrix, obs=obs, var=var)
        adata.write_h5ad(path)
    must_fail = (
        defect in H5AD_MUST_FAIL or genes.n_landmarks < 489 or case["source"] == "other_layer"
    )
    return must_fail, len(obs)


@settings(max_examples=examples(45), **SETTINGS)
@given(case=h5ad_cases())
def test_h5ad_files_end_in_a_result_or_a_clean_error(tiny_bundle, case):
    GENERATED["score h5ad"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path, parent = Path(tmp) / "cells.h5ad", Path(tmp) / "results"
        parent.mkdir()
        must_fail, _ = build_h5ad(case, path)
        out = parent / "out"
        group = ["--group-key", "cluster"] if case["groups"] else []
        outcome = invoke(
            "score",
            path,
            "--bundle",
            tiny_bundle,
            "--sample-key",
            "patient",
            "--normal-where",
            "condition=normal",
            "--min-cells",
            case["min_cells"],
            *group,
            "--out",
            out,
            *FAST,
        )
        result = check_score(outcome, parent, out, None)
        if must_fail:
            assert result == "error", f"accepted a bad input ({case['defect']}): {outcome.output}"


@settings(max_examples=examples(20), **SETTINGS)
@given(case=h5ad_cases(), per_cell=st.booleans())
def test_embed_ends_in_a_result_or_a_clean_error(tiny_bundle, case, per_cell):
    GENERATED["embed h5ad"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path, parent = Path(tmp) / "cells.h5ad", Path(tmp) / "results"
        parent.mkdir()
        must_fail, n_obs = build_h5ad(case, path)
        out = parent / ("cells.h5ad" if per_cell else "profiles.parquet")
        keys = [] if per_cell else ["--sample-key", "patient", "--min-cells", case["min_cells"]]
        if case["groups"] and not per_cell:
            keys += ["--group-key", "cluster"]
        outcome = invoke(
            "embed", path, "--bundle", tiny_bundle, "--out", out, *keys, "--draws", "1"
        )
        result = check_embed(outcome, parent, out, n_obs if per_cell else None)
        # embed needs no coverage and no normal: only bad values and bad sample ids must fail
        bad = VALUE_DEFECTS | ({"zero_profile"} if per_cell else {"missing_patient"})
        if case["defect"] in bad or case["dtype"] == "bool" or case["source"] == "other_layer":
            assert result == "error", f"accepted a bad input: {case['defect']}"


# --- damaged files -------------------------------------------------------------------------------


def valid_files(folder: Path) -> dict[str, Path]:
    """A valid dense h5ad, sparse h5ad and Parquet table over every landmark gene."""
    import anndata

    rng = np.random.default_rng(7)
    counts = rng.poisson(3, size=(6, len(LANDMARKS))).astype(np.float32)
    obs = pd.DataFrame(
        {"patient": ["p1", "p1", "p2", "p2", "p3", "p3"], "condition": ["tumour", "normal"] * 3},
        index=[f"c{i}" for i in range(6)],
    )
    var = pd.DataFrame(index=LANDMARKS)
    files = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anndata.AnnData(X=counts, obs=obs, var=var).write_h5ad(folder / "dense.h5ad")
        sparse_counts = sparse.csr_matrix(counts * (rng.random(counts.shape) < 0.3))
        anndata.AnnData(X=sparse_counts, obs=obs, var=var).write_h5ad(folder / "sparse.h5ad")
    files["dense.h5ad"] = folder / "dense.h5ad"
    files["sparse.h5ad"] = folder / "sparse.h5ad"
    table = pd.DataFrame(counts.T.astype(np.int64), index=LANDMARKS, columns=obs.index)
    table.to_parquet(folder / "table.parquet")
    files["table.parquet"] = folder / "table.parquet"
    return files


@pytest.fixture(scope="module")
def damaged_sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    return {name: path.read_bytes() for name, path in valid_files(folder).items()}


@st.composite
def damage(draw):
    name = draw(st.sampled_from(["dense.h5ad", "sparse.h5ad", "table.parquet"]))
    how = draw(st.sampled_from(["truncate", "flip"]))
    if how == "truncate":
        return name, how, [(draw(st.floats(0, 1, exclude_max=True)), 0)]
    flips = draw(
        st.lists(
            st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        )
    )
    return name, how, flips


def damaged(raw: bytes, how: str, edits) -> bytes:
    if how == "truncate":
        return raw[: int(edits[0][0] * len(raw))]
    data = bytearray(raw)
    for where, value in edits:
        position = int(where * len(data))
        data[position] = value if data[position] != value else (value + 1) % 256
    return bytes(data)


@settings(max_examples=examples(60), **SETTINGS)
@given(case=damage())
def test_damaged_files_end_in_a_result_or_a_clean_error(tiny_bundle, damaged_sources, case):
    GENERATED["damaged file"] += 1
    name, how, edits = case
    with tempfile.TemporaryDirectory() as tmp:
        path, parent = Path(tmp) / name, Path(tmp) / "results"
        parent.mkdir()
        path.write_bytes(damaged(damaged_sources[name], how, edits))
        out = parent / "out"
        where = (
            ["--normal-where", "sample~p"]  # a bogus selection is a clean error too
            if name.endswith(".parquet")
            else ["--sample-key", "patient", "--normal-where", "condition=normal"]
        )
        outcome = invoke(
            "score", path, "--bundle", tiny_bundle, *where, "--min-cells", "1", "--out", out, *FAST
        )
        result = check_score(outcome, parent, out, None)
        if how == "truncate" and name.endswith(".parquet"):
            assert result == "error"


# --- focused cases -------------------------------------------------------------------------------


def score_args(tiny_bundle, path, parent, *extra):
    return invoke("score", path, "--bundle", tiny_bundle, "--out", parent / "out", *FAST, *extra)


def test_millions_of_zeros_in_a_sparse_matrix(tiny_bundle, tmp_path):
    """200,000 cells x 978 genes of zeros (195 million values, stored sparse): refused cleanly,
    and with a few counts in each patient's cells the same shape scores normally."""
    import anndata

    n_cells = 200_000
    obs = pd.DataFrame(
        {
            "patient": np.repeat(["p1", "p2"], n_cells // 2),
            "condition": np.tile(["tumour", "normal"], n_cells // 2),
        },
        index=pd.RangeIndex(n_cells).astype(str),
    )
    var = pd.DataFrame(index=LANDMARKS)
    empty = sparse.csr_matrix((n_cells, len(LANDMARKS)), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anndata.AnnData(X=empty, obs=obs, var=var).write_h5ad(tmp_path / "zeros.h5ad")
    parent = tmp_path / "results"
    where = ("--sample-key", "patient", "--normal-where", "condition=normal")
    outcome = score_args(tiny_bundle, tmp_path / "zeros.h5ad", parent, *where)
    assert_clean_error(outcome, parent)
    assert "only zeros" in outcome.output
    rng = np.random.default_rng(0)
    rows = rng.integers(0, n_cells, size=20_000)
    cols = rng.integers(0, len(LANDMARKS), size=20_000)
    few = sparse.csr_matrix(
        (np.ones(20_000, np.float32), (rows, cols)), shape=(n_cells, len(LANDMARKS))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anndata.AnnData(X=few, obs=obs, var=var).write_h5ad(tmp_path / "few.h5ad")
    outcome = score_args(tiny_bundle, tmp_path / "few.h5ad", parent, *where)
    assert check_score(outcome, parent, parent / "out", 2) == "ok"


def test_millions_of_zeros_in_a_table(tiny_bundle, tmp_path):
    table = pd.DataFrame(0, index=LANDMARKS, columns=[f"s{i}" for i in range(1100)])
    table.to_parquet(tmp_path / "zeros.parquet")
    parent = tmp_path / "results"
    outcome = score_args(
        tiny_bundle, tmp_path / "zeros.parquet", parent, "--normal-where", "sample=s0"
    )
    assert_clean_error(outcome, parent)
    assert "only zeros" in outcome.output


def counts_table(ids, genes=LANDMARKS, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.poisson(5, size=(len(genes), len(ids))), index=genes, columns=ids)


def test_one_gene_and_one_cell(tiny_bundle, tmp_path):
    parent = tmp_path / "results"
    counts_table(["t", "n"], genes=["TP53"]).to_csv(tmp_path / "one_gene.csv")
    outcome = score_args(
        tiny_bundle, tmp_path / "one_gene.csv", parent, "--normal-where", "sample=n"
    )
    assert_clean_error(outcome, parent)
    assert "1 of 978" in " ".join(outcome.output.split())
    import anndata

    counts = counts_table(["t", "n"]).T.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.AnnData(counts.to_numpy(), obs=pd.DataFrame(index=["t", "n"]))
        adata.var_names = LANDMARKS
        adata.write_h5ad(tmp_path / "one_cell_each.h5ad")
    outcome = score_args(
        tiny_bundle,
        tmp_path / "one_cell_each.h5ad",
        parent,
        "--sample-key",
        "obs_names",
        "--normal-where",
        "sample=n",
    )
    assert check_score(outcome, parent, parent / "out", 1) == "ok"


def test_repeated_sample_ids_in_a_csv_header_are_refused(tiny_bundle, tmp_path):
    """pandas renames a repeated header label (S1, S1.1): the table must be refused, not read
    as two different samples."""
    text = counts_table(["S1", "S2", "N"]).to_csv().replace(",S2,", ",S1,", 1)
    (tmp_path / "t.csv").write_text(text)
    parent = tmp_path / "results"
    outcome = score_args(tiny_bundle, tmp_path / "t.csv", parent, "--normal-where", "sample=N")
    assert_clean_error(outcome, parent)
    assert "duplicated sample ids (S1)" in outcome.output


def test_numeric_looking_sample_ids_keep_their_digits(tiny_bundle, tmp_path):
    """A sample id '007' on the row axis of a CSV must stay '007' (not become 7)."""
    counts_table(["007", "010", "N"]).T.to_csv(tmp_path / "t.csv")
    parent = tmp_path / "results"
    outcome = score_args(tiny_bundle, tmp_path / "t.csv", parent, "--normal-where", "sample=N")
    assert check_score(outcome, parent, parent / "out", 2) == "ok"
    ranking = pd.read_parquet(parent / "out" / "ranking.parquet")
    assert sorted(ranking["profile"].unique()) == ["007", "010"]


def test_tumour_identical_to_its_normal_is_refused(tiny_bundle, tmp_path):
    """Passing the same file as tumour and normal makes every signature zero: every score would
    be NaN. It must be refused, not ranked."""
    counts_table(["a", "b"]).to_csv(tmp_path / "t.csv")
    parent = tmp_path / "results"
    outcome = score_args(tiny_bundle, tmp_path / "t.csv", parent, "--normal", tmp_path / "t.csv")
    assert_clean_error(outcome, parent)
    assert "identical" in outcome.output


def test_boolean_h5ad_matrix_is_refused(tiny_bundle, tmp_path):
    import anndata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.AnnData(counts_table(["t", "n"]).T.to_numpy() > 4)
        adata.obs_names, adata.var_names = ["t", "n"], LANDMARKS
        adata.write_h5ad(tmp_path / "b.h5ad")
    parent = tmp_path / "results"
    outcome = score_args(
        tiny_bundle,
        tmp_path / "b.h5ad",
        parent,
        "--sample-key",
        "obs_names",
        "--normal-where",
        "sample=n",
    )
    assert_clean_error(outcome, parent)
    assert "bool values, not numbers" in outcome.output


@pytest.mark.parametrize("backed", [False, True])
def test_damaged_sparse_index_is_refused_not_a_crash(tiny_bundle, tmp_path, monkeypatch, backed):
    """Out-of-range column indices in a sparse h5ad made scipy read out of bounds (segfault);
    also when the file is read backed, block by block (as files over 1 GiB are)."""
    import anndata
    import h5py

    if backed:
        monkeypatch.setattr("unicure_rt.patients.read.BACKED_BYTES", 0)

    counts = sparse.csr_matrix(counts_table(["t1", "t2", "n"]).T.to_numpy().astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.AnnData(counts)
        adata.obs_names, adata.var_names = ["t1", "t2", "n"], LANDMARKS
        adata.write_h5ad(tmp_path / "s.h5ad")
    with h5py.File(tmp_path / "s.h5ad", "r+") as handle:
        handle["X/indices"][5] = 10**9
        handle["X/indptr"][1] = 10**6
    parent = tmp_path / "results"
    outcome = score_args(
        tiny_bundle,
        tmp_path / "s.h5ad",
        parent,
        "--sample-key",
        "obs_names",
        "--normal-where",
        "sample=n",
    )
    assert_clean_error(outcome, parent)
    assert "damaged" in outcome.output


def test_repeated_obs_names_are_refused_for_per_cell_embeddings(tiny_bundle, tmp_path):
    """With repeated observation names, `embed --out x.h5ad` pooled the cells that share a name
    and gave each the pooled embedding; one embedding per observation needs unique names."""
    import anndata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.AnnData(counts_table(["a", "b", "c"]).T.to_numpy().astype(np.float32))
        adata.obs_names, adata.var_names = ["a", "a", "c"], LANDMARKS
        adata.write_h5ad(tmp_path / "dup.h5ad")
    parent = tmp_path / "results"
    parent.mkdir()
    outcome = invoke(
        "embed", tmp_path / "dup.h5ad", "--bundle", tiny_bundle, "--out", parent / "e.h5ad"
    )
    assert_clean_error(outcome, parent)
    assert "obs_names_make_unique" in outcome.output


def test_sample_and_group_ids_that_join_to_the_same_profile_are_refused(tiny_bundle, tmp_path):
    """Sample 'a/b' group 'c' and sample 'a' group 'b/c' both made profile 'a/b/c': two
    patients' cells were pooled into one profile without a word."""
    import anndata

    obs = pd.DataFrame(
        {
            "patient": ["a/b", "a/b", "a", "a", "a", "a"],
            "cluster": ["c", "c", "b/c", "b/c", "x", "x"],
            "condition": ["tumour"] * 4 + ["normal"] * 2,
        },
        index=[f"c{i}" for i in range(6)],
    )
    counts = counts_table(list(obs.index)).T.to_numpy().astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.AnnData(counts, obs=obs)
        adata.var_names = LANDMARKS
        adata.write_h5ad(tmp_path / "c.h5ad")
    parent = tmp_path / "results"
    outcome = score_args(
        tiny_bundle,
        tmp_path / "c.h5ad",
        parent,
        *("--sample-key", "patient", "--group-key", "cluster", "--min-cells", "1"),
        *("--normal-where", "condition=normal"),
    )
    assert_clean_error(outcome, parent)
    assert "sample 'a/b' group 'c'; sample 'a' group 'b/c'" in outcome.output


@pytest.mark.parametrize("command", ["score", "embed"])
def test_an_output_that_cannot_be_created_is_refused_before_any_work(
    tiny_bundle, tmp_path, command
):
    """--out below a file: refused up front (it used to fail after the whole run, with an
    OSError traceback from mkdir)."""
    counts_table(["t", "n"]).to_csv(tmp_path / "t.csv")
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / ("out" if command == "score" else "e.parquet")
    extra = ("--normal-where", "sample=n") if command == "score" else ()
    outcome = invoke(command, tmp_path / "t.csv", "--bundle", tiny_bundle, "--out", out, *extra)
    assert outcome.exit_code == 2, outcome.output
    assert outcome.output.startswith("Error:") and "is a file, not a folder" in outcome.output
    assert "Traceback" not in outcome.output
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_failed_write_is_a_clean_error_and_leaves_nothing(tmp_path, monkeypatch):
    """An OSError while writing (disk full, permissions) removes the staging folder and becomes
    a one-paragraph UserError."""
    from unicure_rt.errors import UserError
    from unicure_rt.outputs import staged_output_dir, staged_output_file

    full = pytest.raises(UserError, match="No space left")
    with full, staged_output_dir(tmp_path / "out") as staging:
        (staging / "ranking.csv").write_text("half")
        raise OSError(28, "No space left on device")
    full = pytest.raises(UserError, match="No space left")
    with full, staged_output_file(tmp_path / "e.parquet") as staging:
        staging.write_text("half")
        raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_replace_with_force_keeps_the_old_output(tmp_path, monkeypatch):
    """--force: when the new folder cannot be renamed into place, the old one is put back (it
    used to stay in a hidden `.out.old-*` folder, leaving no `out` at all)."""
    from unicure_rt import outputs
    from unicure_rt.errors import UserError
    from unicure_rt.outputs import staged_output_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    (out / outputs.MARKER).write_text("{}")

    def failing_rename(source, target):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(outputs, "_rename_noreplace", failing_rename)
    with pytest.raises(UserError), staged_output_dir(out, force=True) as staging:
        (staging / "ranking.csv").write_text("new")
    assert (out / "mine.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_markup_in_sample_ids_is_printed_verbatim(tiny_bundle, tmp_path):
    counts_table(["[/red]x", "[bold]y", "n"]).to_csv(tmp_path / "t.csv")
    parent = tmp_path / "results"
    outcome = invoke(
        "score", tmp_path / "t.csv", "--bundle", tiny_bundle, "--normal-where", "sample=n", *FAST
    )
    assert outcome.exit_code == 0, outcome.output
    assert "[/red]x" in outcome.output and "[bold]y" in outcome.output
    assert not parent.exists()


def test_oligodendroglioma_is_byte_identical_across_threads_with_draws(
    tiny_bundle, shared_data, tmp_path
):
    """Determinism with several sentence draws: the same seed gives a byte-identical ranking
    on 1 and 2 threads."""
    source = shared_data / "singlecell" / "oligodendroglioma.h5ad"
    common = ("--bundle", tiny_bundle, "--normal-where", "cell_type~Oligodendrocytes")
    common += ("--sample-key", "obs_names:^([^_]+)_", "--min-cells", "5", "--draws", "3", "-q")
    for threads in ("1", "2"):
        outcome = invoke(
            "score", source, *common, "--threads", threads, "--out", tmp_path / threads
        )
        assert outcome.exit_code == 0, outcome.output
    one, two = (tmp_path / t / "ranking.parquet" for t in ("1", "2"))
    assert one.read_bytes() == two.read_bytes()
    assert pd.read_parquet(one)["score_sd_across_draws"].notna().all()


DOSE_ITEMS = st.one_of(
    st.sampled_from(["", " ", "1", "0.04", "10", "1e9", "nan", "inf", "-1", "x", "20", "0"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@settings(max_examples=examples(300), **SETTINGS)
@given(items=st.lists(DOSE_ITEMS, max_size=6), seed=st.integers(-(2**40), 2**40))
def test_dose_lists_and_seeds_are_taken_as_written_or_refused(items, seed):
    """--doses is never rewritten: either every item is a distinct finite dose in 0-1000 µM and
    comes back unchanged, or the list is refused with a UserError. --seed accepts exactly the
    integers 0..2**32-1 and refuses the rest with a usage error (exit 2), never a traceback."""
    from unicure_rt.cli.common import LARGEST_DOSE_UM, parse_doses
    from unicure_rt.errors import UserError

    text = ",".join(items)
    GENERATED["doses"] += 1
    try:
        doses = parse_doses(text)
    except UserError:
        OUTCOMES["doses refused"] += 1
        values = None
    else:
        OUTCOMES["doses taken"] += 1
        values = [float(item) for item in items]
        assert list(doses) == values and len(set(values)) == len(values)
    if values is None and items and all(i.strip() for i in items):
        try:
            floats = [float(i) for i in items]
        except ValueError:
            floats = None
        if floats is not None:
            assert (
                not all(np.isfinite(floats))
                or min(floats) < 0
                or max(floats) > LARGEST_DOSE_UM
                or len(set(floats)) < len(floats)
            )
    GENERATED["seed"] += 1
    result = runner.invoke(app, ["stratify", "missing-ranking", "--out", "x", "--seed", str(seed)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert ("--seed" in result.output) == (not 0 <= seed < 2**32), result.output


DIGEST = "0123456789abcdef" * 4  # the manifest digest a generated pin is checked against
PINS = st.one_of(
    st.text(max_size=70),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=66),
    st.sampled_from(["", " ", DIGEST, DIGEST.upper(), f" {DIGEST} ", DIGEST[:-1] + "0"]),
)


@settings(max_examples=examples(200), **SETTINGS)
@given(pin=PINS)
def test_bundle_pins_are_taken_exactly_or_refused(pin):
    """--bundle-sha256 accepts exactly 64 hex digits (case and surrounding blanks aside): any
    other text is refused with exit 2 and no traceback, and any other digest fails the pin."""
    from unicure_rt.bundle.pin import BundlePin
    from unicure_rt.errors import UserError

    GENERATED["bundle pin"] += 1
    try:
        parsed = BundlePin(sha256=pin)
    except UserError as exc:
        OUTCOMES["pin refused"] += 1
        assert "64 hexadecimal digits" in str(exc)
        assert len(pin.strip()) != 64 or set(pin.strip().lower()) - set("0123456789abcdef")
        return
    OUTCOMES["pin taken"] += 1
    assert parsed.expected_sha256 == pin.strip().lower()
    try:
        parsed.check(Path("bundle"), DIGEST)
    except UserError as exc:
        assert parsed.expected_sha256 != DIGEST and "not the pinned" in str(exc)
    else:
        assert parsed.expected_sha256 == DIGEST


def test_zz_generated_cases_report():
    """Print how many generated cases ran (run with -s to see it) and what they ended in."""
    total = sum(GENERATED.values())
    print(f"\ngenerated cases: {total} {dict(GENERATED)}; outcomes: {dict(OUTCOMES)}")
    if any(key.startswith("score") for key in OUTCOMES):
        assert OUTCOMES["score ok"] > 0 and OUTCOMES["score error"] > 0
