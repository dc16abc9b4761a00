"""Drug vectors, RDKit fingerprints, the drug encoder and drug libraries (`unicure_rt.drugs`)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_bundles import write_fake_bundle
from reference_multidrug import CTRL, multidrug_input

from unicure_rt.bundle.load import load_bundle
from unicure_rt.defaults import REFERENCE_DOSES_UM
from unicure_rt.drugs.build import build_library, import_library
from unicure_rt.drugs.encoder import encode_smiles, rdkit_encoder_spec
from unicure_rt.drugs.fingerprints import invalid_smiles, morgan_count_fingerprints, tanimoto_matrix
from unicure_rt.drugs.library import load_library
from unicure_rt.drugs.vectors import combination_vectors, control_vectors, drug_vectors
from unicure_rt.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(
    os.environ.get("UNICURE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
DRUG_DATA = SHARED / "drugs"
needs_shared = pytest.mark.skipif(
    not DRUG_DATA.is_dir(),
    reason=f"shared data not found at {DRUG_DATA} (set UNICURE_SHARED_DATA to its data folder)",
)

SMILES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "imatinib": "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1",
    "ethanol": "CCO",
    "broken": "C1CC(",
}


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------


def _make_rdkit_bundle(directory: Path, seed: int):
    onnx = pytest.importorskip("onnx", reason="onnx is needed to build the fake drug encoder")
    from onnx import TensorProto, helper, numpy_helper

    directory.mkdir(parents=True)
    weights = np.random.default_rng(seed).normal(0, 0.05, (2048, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["fingerprint", "W"], ["drug_embedding"])],
        "drug_encoder",
        [helper.make_tensor_value_info("fingerprint", TensorProto.FLOAT, ["batch", 2048])],
        [helper.make_tensor_value_info("drug_embedding", TensorProto.FLOAT, ["batch", 512])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, directory / "drug_encoder.onnx")
    write_fake_bundle(directory, rdkit_encoder_spec(directory / "drug_encoder.onnx"))
    return load_bundle(directory), weights


@pytest.fixture(scope="module")
def rdkit_bundle(tmp_path_factory):
    return _make_rdkit_bundle(tmp_path_factory.mktemp("bundles") / "rdkit", seed=0)


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory):
    return _make_rdkit_bundle(tmp_path_factory.mktemp("bundles") / "other", seed=1)[0]


@pytest.fixture(scope="module")
def precomputed_bundle(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bundles") / "unimol"
    directory.mkdir()
    write_fake_bundle(directory)
    return load_bundle(directory)


@pytest.fixture
def smiles_csv(tmp_path):
    path = tmp_path / "drugs.csv"
    frame = pd.DataFrame(
        {
            "drug_id": [f"D{i}" for i in range(len(SMILES))],
            "name": list(SMILES),
            "smiles": list(SMILES.values()),
            "target": ["COX", "ADORA", "ABL1", None, "?"],
        }
    )
    frame.to_csv(path, index=False)
    return path


def _expected_embedding(weights: np.ndarray, smiles: str) -> np.ndarray:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    counts = generator.GetCountFingerprintAsNumPy(Chem.MolFromSmiles(smiles))
    return np.log1p(counts.astype(np.float64)) @ weights.astype(np.float64)


# ------------------------------------------------------------------------------------------
# drug vectors (section 4 of the reference)
# ------------------------------------------------------------------------------------------


def test_reference_doses():
    assert REFERENCE_DOSES_UM == (0.04, 0.12, 0.37, 1.11, 3.33, 10.0)


def test_drug_vector_layout():
    emb = np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32)
    vec = drug_vectors(emb, 1.11)
    assert vec.shape == (3, 528) and vec.dtype == np.float32
    np.testing.assert_array_equal(vec[:, :512], emb)
    np.testing.assert_array_equal(vec[:, 512:], np.float32(np.log10(2.11)))
    assert np.all(vec[:, 512:] == vec[:, 512:513])  # the dose, then padded with the same value

    per_row = drug_vectors(emb, np.array([0.0, 0.04, 10.0]))
    np.testing.assert_allclose(per_row[:, 527], np.log10([1.0, 1.04, 11.0]), rtol=1e-6)
    assert np.all(per_row[0, 512:] == 0.0)

    short = drug_vectors(np.ones((2, 500)), 3.33)
    assert short.shape == (2, 528)
    np.testing.assert_allclose(short[:, 500:], np.log10(4.33), rtol=1e-6)


def test_combination_vectors_follow_the_published_multidrug_loader():
    """Every arm kind, built by `combination_vectors` and by the published loader's rule."""
    rng = np.random.default_rng(1)
    embeddings = {"A": rng.normal(size=512), "B": rng.normal(size=512)}
    cases = [
        ("A", 0.37, "B", 10.0),  # drug + drug
        ("B", 10.0, "A", 0.37),  # the other order
        ("A", 0.37, CTRL, 0.0),  # drug + control
        (CTRL, 0.0, "B", 3.33),  # control + drug
        (CTRL, 0.0, CTRL, 0.0),  # control + control
        ("A", 0.12, "A", 10.0),  # the same drug at two doses
    ]

    def arm(name: str, dose: float) -> np.ndarray | None:
        if name == CTRL:
            return None
        return drug_vectors(embeddings[name][None, :], dose)

    for name_1, dose_1, name_2, dose_2 in cases:
        expected = multidrug_input(embeddings, name_1, dose_1, name_2, dose_2)
        built = combination_vectors(arm(name_1, dose_1), arm(name_2, dose_2), n=1)
        assert built.dtype == np.float32 and built.shape == (1, len(expected))
        np.testing.assert_array_equal(built[0], expected.astype(np.float32))
        # a control arm may also be given as zero vectors
        zeros = control_vectors(1)
        as_zeros = combination_vectors(
            zeros if name_1 == CTRL else arm(name_1, dose_1),
            zeros if name_2 == CTRL else arm(name_2, dose_2),
        )
        np.testing.assert_array_equal(as_zeros, built)
    assert len(multidrug_input(embeddings, "A", 1.0, "B", 1.0)) == 1056
    assert len(multidrug_input(embeddings, "A", 1.0, CTRL, 0.0)) == 528


def test_combination_vectors_refuse_mixed_or_mismatched_arms():
    rng = np.random.default_rng(1)
    a = drug_vectors(rng.normal(size=(4, 512)), 0.37)
    b = drug_vectors(rng.normal(size=(4, 512)), 10.0)
    assert combination_vectors(a, b).shape == (4, 1056)
    assert not control_vectors(4).any() and control_vectors(4).shape == (4, 528)
    with pytest.raises(UserError, match="same shape"):
        combination_vectors(a, b[:2])
    mixed = b.copy()
    mixed[1] = 0.0
    with pytest.raises(UserError, match="mixes control rows"):
        combination_vectors(a, mixed)
    with pytest.raises(UserError, match="pass n"):
        combination_vectors(None, None)


@pytest.mark.parametrize("dose", [-0.1, float("nan"), float("inf"), "ten"])
def test_bad_doses_are_user_errors(dose):
    with pytest.raises(UserError, match="[Dd]ose"):
        drug_vectors(np.zeros((2, 512)), dose)


def test_bad_embedding_shapes_are_user_errors():
    with pytest.raises(UserError, match="2-D"):
        drug_vectors(np.zeros(512), 1.0)
    with pytest.raises(UserError, match="left for the dose"):
        drug_vectors(np.zeros((1, 528)), 1.0)
    with pytest.raises(UserError, match="one dose per drug"):
        drug_vectors(np.zeros((3, 512)), [1.0, 2.0])


# ------------------------------------------------------------------------------------------
# fingerprints
# ------------------------------------------------------------------------------------------


@needs_shared
def test_fingerprints_on_trapnell_compounds(capfd):
    table = pd.read_csv(DRUG_DATA / "trapnell_drugs_smiles.csv", header=None)
    names, smiles = table[0].tolist(), table[1].tolist()
    n = len(smiles)  # 188 compounds + the DMSO control, listed twice
    assert n >= 188
    fps, valid = morgan_count_fingerprints([*smiles, "not a smiles", None])

    assert fps.shape == (n + 2, 2048) and fps.dtype == np.float32
    assert valid[:n].all() and not valid[n:].any()
    assert invalid_smiles([*smiles, "not a smiles", None], valid) == [n, n + 1]
    assert invalid_smiles([*smiles[:3], "not a smiles"]) == [3]
    assert not fps[n:].any()
    assert (fps[:n] >= 0).all() and (fps[:n].sum(axis=1) > 0).all()
    assert "SMILES Parse Error" not in capfd.readouterr().err  # RDKit chatter is silenced

    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    i = names.index("ABT-737")
    counts = generator.GetCountFingerprintAsNumPy(Chem.MolFromSmiles(smiles[i]))
    np.testing.assert_allclose(fps[i], np.log1p(counts), rtol=1e-6)
    assert counts.max() > 1  # a count fingerprint, not bits


def test_tanimoto_matrix():
    names = ["aspirin", "caffeine", "imatinib", "broken"]
    smiles = [SMILES[n] for n in names]
    sim = tanimoto_matrix(smiles, smiles)
    assert sim.shape == (4, 4)
    np.testing.assert_allclose(np.diag(sim)[:3], 1.0)
    np.testing.assert_allclose(sim[:3, :3], sim[:3, :3].T)
    assert np.isnan(sim[3]).all() and np.isnan(sim[:, 3]).all()
    assert 0 <= sim[0, 1] < 0.5


# ------------------------------------------------------------------------------------------
# encoder and library round trip
# ------------------------------------------------------------------------------------------


def test_encoder_spec_names_the_graph_hash(rdkit_bundle):
    bundle, _ = rdkit_bundle
    spec = bundle.drug_encoder
    assert spec["kind"] == "rdkit-morgan-counts" and spec["dim"] == 512
    assert spec["id"].endswith(bundle.manifest["files"]["drug_encoder.onnx"])


def test_encode_smiles(rdkit_bundle):
    bundle, weights = rdkit_bundle
    emb = encode_smiles([SMILES["aspirin"], SMILES["imatinib"]], bundle)
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[1], _expected_embedding(weights, SMILES["imatinib"]), atol=1e-5)
    with pytest.raises(UserError, match="could not be parsed"):
        encode_smiles([SMILES["aspirin"], SMILES["broken"]], bundle)


def test_precomputed_bundle_cannot_encode(precomputed_bundle, smiles_csv, tmp_path):
    with pytest.raises(UserError, match="drugs import"):
        build_library(smiles_csv, precomputed_bundle, tmp_path / "lib.parquet")
    with pytest.raises(UserError, match="precomputed"):
        encode_smiles([SMILES["aspirin"]], precomputed_bundle)
    assert not (tmp_path / "lib.parquet").exists()


def test_library_round_trip(rdkit_bundle, smiles_csv, tmp_path):
    bundle, weights = rdkit_bundle
    out = tmp_path / "lib" / "drugs.parquet"
    summary = build_library(smiles_csv, bundle, out, source="test", license="CC0-1.0")
    assert summary.n_drugs == 4 and summary.invalid == ["D4"]
    assert summary.encoder_id == bundle.drug_encoder["id"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["drugs.parquet"]  # no temp files

    library = load_library(out, encoder_id=bundle.drug_encoder["id"])
    assert library.ids == ["D0", "D1", "D2", "D3"] and len(library) == 4
    assert library.names == ["aspirin", "caffeine", "imatinib", "ethanol"]
    assert library.content_sha256 == summary.content_sha256
    assert library.embeddings.shape == (4, 512) and library.embeddings.dtype == np.float32
    np.testing.assert_array_equal(
        library.embeddings, encode_smiles(library.metadata["smiles"], bundle)
    )
    np.testing.assert_allclose(
        library.embeddings[2], _expected_embedding(weights, SMILES["imatinib"]), atol=1e-5
    )
    assert list(library.metadata.columns) == [
        "drug_id",
        "name",
        "smiles",
        "antineoplastic",
        "target",
    ]
    assert library.metadata["antineoplastic"].isna().all()
    assert library.index_of("Imatinib") == 2 and library.index_of("D3") == 3
    with pytest.raises(UserError, match="not in library"):
        library.index_of("nivolumab")

    info = json.loads(pq.ParquetFile(out).metadata.metadata[b"unicure_rt.library"])
    assert info["format_version"] == 1 and info["n_drugs"] == 4 and info["dim"] == 512
    assert info["source"] == "test" and info["license"] == "CC0-1.0" and info["created"]
    assert info["embedding_dtype"] == "float32"

    # the content hash, recomputed from its definition
    ids_digest = hashlib.sha256(b"D0\nD1\nD2\nD3\n").digest()
    emb_digest = hashlib.sha256(library.embeddings.astype("<f4").tobytes()).digest()
    expected = hashlib.sha256(ids_digest + emb_digest).hexdigest()
    assert info["content_sha256"] == expected

    # streaming (nothing kept in memory at load) gives the same embeddings
    streamed = load_library(out, encoder_id=None, keep_in_memory_bytes=0)
    batches = list(streamed.iter_batches(batch_size=3))
    assert [start for start, _ in batches] == [0, 3]
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), library.embeddings)
    np.testing.assert_array_equal(streamed.embeddings, library.embeddings)


def test_float16_storage(rdkit_bundle, smiles_csv, tmp_path):
    bundle, _ = rdkit_bundle
    exact = build_library(smiles_csv, bundle, tmp_path / "f32.parquet")
    half = build_library(smiles_csv, bundle, tmp_path / "f16.parquet", dtype="float16")
    a = load_library(exact.path, encoder_id=exact.encoder_id).embeddings
    b = load_library(half.path, encoder_id=half.encoder_id).embeddings
    assert b.dtype == np.float32
    change = np.abs(a - b).max()
    assert 0 < change <= half.float16_max_abs_change <= np.abs(a).max() * 2**-11
    assert half.size_bytes < exact.size_bytes


def _rewrite_with(path: Path, out: Path, mutate) -> None:
    """Copy a library with its metadata but with the embedding array changed by `mutate`."""
    table = pq.read_table(path)
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    mutate(emb)
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), 512)
    table = table.set_column(table.schema.get_field_index("embedding"), "embedding", column)
    metadata = pq.ParquetFile(path).metadata.metadata
    pq.write_table(table.replace_schema_metadata(None), out)
    with pq.ParquetWriter(out, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({b"unicure_rt.library": metadata[b"unicure_rt.library"]})


def test_tampered_library_is_refused(rdkit_bundle, smiles_csv, tmp_path):
    bundle, _ = rdkit_bundle
    good = build_library(smiles_csv, bundle, tmp_path / "good.parquet").path

    same = tmp_path / "same.parquet"
    _rewrite_with(good, same, lambda emb: None)
    load_library(same, encoder_id=None)  # a faithful copy still verifies

    tampered = tmp_path / "tampered.parquet"

    def flip_one_byte(emb: np.ndarray) -> None:
        emb.view(np.uint8)[1, 100] ^= 1

    _rewrite_with(good, tampered, flip_one_byte)
    with pytest.raises(UserError, match="integrity check"):
        load_library(tampered, encoder_id=None)

    raw = bytearray(good.read_bytes())
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="damaged, truncated"):
        load_library(truncated, encoder_id=None)

    corrupt = tmp_path / "corrupt.parquet"
    raw[len(raw) // 3] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(UserError):
        load_library(corrupt, encoder_id=None)

    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(plain)
    with pytest.raises(UserError, match="not a unicure-rt drug library"):
        load_library(plain, encoder_id=None)
    with pytest.raises(UserError, match="does not exist"):
        load_library(tmp_path / "missing.parquet", encoder_id=None)


def test_newer_format_version_is_refused(rdkit_bundle, smiles_csv, tmp_path):
    bundle, _ = rdkit_bundle
    good = build_library(smiles_csv, bundle, tmp_path / "good.parquet").path
    table = pq.read_table(good)
    info = json.loads(pq.ParquetFile(good).metadata.metadata[b"unicure_rt.library"])
    info["format_version"] = 99
    newer = tmp_path / "newer.parquet"
    with pq.ParquetWriter(newer, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({"unicure_rt.library": json.dumps(info)})
    with pytest.raises(UserError, match="newer than this unicure-rt"):
        load_library(newer, encoder_id=None)


def test_library_for_another_encoder_is_refused(rdkit_bundle, other_bundle, smiles_csv, tmp_path):
    bundle, _ = rdkit_bundle
    out = build_library(smiles_csv, bundle, tmp_path / "lib.parquet").path
    other_id = other_bundle.drug_encoder["id"]
    assert other_id != bundle.drug_encoder["id"]
    with pytest.raises(UserError) as error:
        load_library(out, encoder_id=other_id)
    message = str(error.value)
    assert bundle.drug_encoder["id"] in message and other_id in message
    assert "unicure-rt drugs build" in message and "--bundle" in message


def test_existing_output_needs_force(rdkit_bundle, smiles_csv, tmp_path):
    bundle, _ = rdkit_bundle
    out = tmp_path / "lib.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists"):
        build_library(smiles_csv, bundle, out)
    with pytest.raises(UserError, match="already exists"):
        import_library(pd.DataFrame(np.ones((2, 4)), index=["a", "b"]), encoder_id="x", out=out)
    assert out.read_bytes() == b"precious"
    with pytest.raises(UserError, match="not written by unicure-rt"):
        build_library(smiles_csv, bundle, out, force=True)
    assert out.read_bytes() == b"precious"
    out.unlink()
    import_library(pd.DataFrame(np.ones((2, 4)), index=["a", "b"]), encoder_id="x", out=out)
    build_library(smiles_csv, bundle, out, force=True)
    assert len(load_library(out, encoder_id=None)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drugs.csv", "lib.parquet"]


def test_bad_tables_are_user_errors(rdkit_bundle, tmp_path):
    bundle, _ = rdkit_bundle
    out = tmp_path / "lib.parquet"
    odd = tmp_path / "drugs.xlsx"
    odd.write_text("x")
    with pytest.raises(UserError, match="format"):
        build_library(odd, bundle, out)
    no_smiles = tmp_path / "no_smiles.csv"
    pd.DataFrame({"name": ["a"], "structure": ["CCO"]}).to_csv(no_smiles, index=False)
    with pytest.raises(UserError, match="--smiles-column"):
        build_library(no_smiles, bundle, out)
    dupes = tmp_path / "dupes.csv"
    pd.DataFrame({"drug_id": ["a", "a"], "smiles": ["CCO", "CCN"]}).to_csv(dupes, index=False)
    with pytest.raises(UserError, match="unique"):
        build_library(dupes, bundle, out)
    invalid = tmp_path / "invalid.csv"
    pd.DataFrame({"drug_id": ["a"], "smiles": ["C1CC("]}).to_csv(invalid, index=False)
    with pytest.raises(UserError, match="empty"):
        build_library(invalid, bundle, out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".parquet") == []


# ------------------------------------------------------------------------------------------
# import of precomputed embeddings
# ------------------------------------------------------------------------------------------


def _unimol_like(n: int = 6) -> pd.DataFrame:
    values = np.random.default_rng(3).normal(size=(n, 512)).astype(np.float32)
    return pd.DataFrame(values, index=[f"drug {i}" for i in range(n)])


def test_import_csv_indexed_by_name(tmp_path):
    frame = _unimol_like()
    table = tmp_path / "unimol.csv"
    frame.to_csv(table)
    summary = import_library(table, encoder_id="unimol-512", out=tmp_path / "lib.parquet", dim=512)
    assert summary.n_drugs == 6 and summary.encoder_id == "unimol-512"
    library = load_library(summary.path, encoder_id="unimol-512")
    assert library.ids == list(frame.index) and library.names == list(frame.index)
    np.testing.assert_array_equal(library.embeddings, frame.to_numpy())
    assert library.metadata["smiles"].isna().all()


def test_import_parquet_with_metadata(tmp_path):
    frame = _unimol_like()
    frame.columns = [f"e{i}" for i in range(512)]
    frame.index.name = "name"
    frame["smiles"] = "CCO"
    frame["antineoplastic"] = ["True", "false", None, "yes", "0", ""]
    frame["pubchem_cid"] = np.arange(6)
    table = tmp_path / "unimol.parquet"
    frame.to_parquet(table)
    out = tmp_path / "lib.parquet"
    import_library(table, encoder_id="unimol-512", out=out, dim=512, dtype="float16")
    library = load_library(out, encoder_id="unimol-512")
    assert library.metadata["antineoplastic"].tolist() == [True, False, None, True, False, None]
    assert library.metadata["pubchem_cid"].tolist() == list(range(6))
    np.testing.assert_allclose(
        library.embeddings, frame.iloc[:, :512].to_numpy(), atol=4e-3, rtol=1e-3
    )


def test_import_validation(tmp_path):
    out = tmp_path / "lib.parquet"
    frame = _unimol_like()
    with pytest.raises(UserError, match="512"):
        import_library(frame.iloc[:, :500], encoder_id="unimol-512", out=out, dim=512)
    bad = frame.copy()
    bad.iloc[2, 7] = np.nan
    with pytest.raises(UserError, match="non-finite") as error:
        import_library(bad, encoder_id="unimol-512", out=out)
    assert "drug 2" in str(error.value)
    with pytest.raises(UserError, match="encoder id"):
        import_library(frame, encoder_id=" ", out=out)
    with pytest.raises(UserError, match="float16 range"):
        import_library(frame * 1e6, encoder_id="unimol-512", out=out, dtype="float16")
    assert not any(tmp_path.iterdir())  # no partial output


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    import typer
    from typer.testing import CliRunner

    from unicure_rt.cli import drugs as drugs_cli

    app = typer.Typer()
    app.add_typer(drugs_cli.app, name="drugs")

    def invoke(*args: str):
        return CliRunner().invoke(app, [str(a) for a in args])

    return invoke


def test_cli_build(cli, rdkit_bundle, smiles_csv, tmp_path):
    bundle, _ = rdkit_bundle
    out = tmp_path / "lib.parquet"
    args = ["drugs", "build", smiles_csv, "--bundle", bundle.path, "--out", out]
    result = cli(*args, "--id-column", "name", "--dtype", "float16")
    assert result.exit_code == 0, result.output
    library = load_library(out, encoder_id=bundle.drug_encoder["id"])
    assert library.ids == ["aspirin", "caffeine", "imatinib", "ethanol"]
    assert library.content_sha256 in result.output
    assert "invalid SMILES skipped" in result.output and "broken" in result.output

    again = cli(*args)
    assert again.exit_code == 2 and "already exists" in again.output
    assert "Traceback" not in again.output
    assert cli(*args, "--force").exit_code == 0


def test_cli_import(cli, tmp_path):
    table = tmp_path / "unimol.tsv.gz"
    _unimol_like().to_csv(table, sep="\t")
    out = tmp_path / "lib.parquet"
    result = cli("drugs", "import", table, "--encoder-id", "unimol-512", "--out", out, "--dim", 512)
    assert result.exit_code == 0, result.output
    assert "unimol-512" in result.output
    assert len(load_library(out, encoder_id="unimol-512")) == 6
    assert cli("drugs", "--help").exit_code == 0


# ------------------------------------------------------------------------------------------
# LINCS default library (small subset)
# ------------------------------------------------------------------------------------------


def _script():
    spec = importlib.util.spec_from_file_location(
        "build_drug_library", REPO / "scripts" / "build_drug_library.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_shared
def test_lincs_subset(rdkit_bundle, tmp_path):
    bundle, _ = rdkit_bundle
    lincs = pd.read_csv(DRUG_DATA / "lincs_compounds.tsv.gz", sep="\t")
    picked = lincs["pert_iname"].isin(["gemcitabine", "doxorubicin", "celecoxib", "aspirin"])
    broken = lincs["canonical_smiles"].eq("-666")
    dupes = lincs["inchi_key"].duplicated(keep=False) & ~broken
    subset = pd.concat(
        [
            lincs.head(150),
            lincs[picked],
            lincs[broken].head(3),
            lincs[dupes].sort_values("inchi_key").head(4),
        ]
    ).drop_duplicates("pert_id")
    path = tmp_path / "subset.tsv.gz"
    subset.to_csv(path, sep="\t", index=False)

    table, stats = _script().prepare_lincs_table(
        path, DRUG_DATA / "drugbank.tsv", mapping_path=DRUG_DATA / "drugbank_lincs_mapping.tsv"
    )
    assert stats["invalid_smiles"] == 3 and stats["duplicates"] >= 2
    assert table["drug_id"].is_unique and table["inchi_key"].is_unique
    flags = dict(zip(table["name"], table["antineoplastic"], strict=True))
    assert flags["gemcitabine"] is True and flags["doxorubicin"] is True
    assert flags["celecoxib"] is True  # DrugBank lists L01XX33 besides M01AH01
    assert flags.get("aspirin", False) is False
    assert not {"drugbank_id", "atc_codes"} & set(table.columns)  # only the flag ships

    fps, valid = morgan_count_fingerprints(table["smiles"])
    assert valid.all() and fps.shape == (len(table), 2048)

    out = tmp_path / "lincs.parquet"
    summary = build_library(table, bundle, out, dtype="float16", source="LINCS")
    assert summary.n_drugs == len(table) and summary.n_invalid == 0
    library = load_library(out, encoder_id=bundle.drug_encoder["id"])
    assert library.metadata["antineoplastic"].eq(True).sum() >= 3
    assert library.metadata["inchi_key"].str.len().eq(27).all()

    capped, stats = _script().prepare_lincs_table(path, DRUG_DATA / "drugbank.tsv", max_drugs=10)
    assert len(capped) == 10 and capped["antineoplastic"].eq(True).sum() >= 3


def test_no_torch_import():
    code = (
        "import sys, unicure_rt.drugs.library, unicure_rt.cli.drugs; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
