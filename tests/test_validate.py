"""`unicure-rt validate` on small real subsets of ../shared/data (skipped without it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from unicure_rt.analysis.validation import classic
from unicure_rt.analysis.validation.classes import run_classes, score_patients
from unicure_rt.analysis.validation.data import (
    FILES,
    DataFolder,
    consensus_signatures,
    drugbank_table,
    gdsc_table,
)
from unicure_rt.analysis.validation.model import BundleModel
from unicure_rt.analysis.validation.names import cell_line_key
from unicure_rt.analysis.validation.run import ValidateOptions, run_validation
from unicure_rt.analysis.validation.sensitivity import gdsc_panel, run_sensitivity
from unicure_rt.analysis.validation.signatures import run_signatures
from unicure_rt.bundle.load import load_bundle
from unicure_rt.cli.app import app
from unicure_rt.drugs.fingerprints import inchikeys
from unicure_rt.errors import UserError
from unicure_rt.patients.load import PatientProfiles, load_patient
from unicure_rt.runtime.sessions import RuntimeOptions
from unicure_rt.scoring.options import ScoreOptions, resolve_library
from unicure_rt.scoring.pipeline import score_patient

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"
DOSES = (10.0,)
runner = CliRunner()
quiet = {"progress": lambda stage, done, total: None}


def rows(suite: dict) -> dict[tuple[str, str], dict]:
    return {(r["method"], r["metric"]): r for r in suite["summary"]}


@pytest.fixture(scope="module")
def small_data(shared_data, tmp_path_factory) -> DataFolder:
    """12 L1000 and 4 HPA cell lines screened by GDSC2, 150 consensus compounds (every one a
    GDSC library drug has, then others); the other files are linked unchanged."""
    root = tmp_path_factory.mktemp("validation-data")
    for name, relative in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        if name not in ("gdsc", "l1000_baselines", "hpa_lines", "consensus"):
            (root / relative).symlink_to(shared_data / relative)
    gdsc = pd.read_parquet(shared_data / FILES["gdsc"])
    screened = set(gdsc["CELL_LINE_NAME"].map(cell_line_key))
    baselines = pd.read_parquet(shared_data / FILES["l1000_baselines"])
    l1000 = [line for line in baselines.index if cell_line_key(line) in screened][:12]
    baselines.loc[[*l1000, "averaged"]].to_parquet(root / FILES["l1000_baselines"])
    hpa = pd.read_parquet(shared_data / FILES["hpa_lines"])
    hpa_lines = [line for line in hpa.index if cell_line_key(line) in screened][:4]
    hpa.loc[hpa_lines].to_parquet(root / FILES["hpa_lines"])
    keys = {cell_line_key(line) for line in [*l1000, *hpa_lines]}
    gdsc[gdsc["CELL_LINE_NAME"].map(cell_line_key).isin(keys)].to_parquet(root / FILES["gdsc"])
    consensus = pd.read_parquet(shared_data / FILES["consensus"])
    full = DataFolder(shared_data)
    bank = drugbank_table(full)
    library = resolve_library(load_bundle(None), None)
    screened_keys = set(gdsc_panel(full, gdsc_table(full), library)["inchikey"].dropna())
    lib_keys = set(inchikeys(library.metadata["inchi_key"]).dropna())
    gdsc_ids = bank.index[bank["inchikey"].isin(screened_keys)]
    with_library = bank.index[bank["inchikey"].isin(lib_keys)]
    keep = [
        *consensus.index[consensus.index.isin(gdsc_ids)],
        *consensus.index[consensus.index.isin(with_library)][:100],
        *consensus.index[~consensus.index.isin(with_library)][:40],
    ]
    keep = list(dict.fromkeys(keep))
    consensus.loc[keep].to_parquet(root / FILES["consensus"])
    return DataFolder(root)


@pytest.fixture(scope="module")
def bundle_model():
    bundle = load_bundle(None)
    library = resolve_library(bundle, None)
    return BundleModel(bundle, library, seed=0, draws=1, runtime=RuntimeOptions(threads=2))


@pytest.fixture(scope="module")
def patients() -> PatientProfiles:
    """The first three tumours of the TCGA example, with their normals."""
    full = load_patient(EXAMPLE, normal_where="condition=normal")
    keep = full.tumour.index[:3]
    return PatientProfiles(
        full.genes, full.tumour.loc[keep], full.normal.loc[keep], full.obs.loc[keep], full.qc
    )


class PlantedModel:
    """A model whose predicted effect of a drug is its measured consensus signature, carried
    through a known map: drug embedding = signature @ R.T for a seeded rotation R, prediction
    = cell + embedding @ R. Drugs without a measured signature get no effect at all."""

    encodes_structures = True

    def __init__(self, data: DataFolder, library, genes: list[str]) -> None:
        self.genes = genes
        self.consensus = consensus_signatures(data, genes).reindex(columns=genes).fillna(0.0)
        keys = inchikeys(library.metadata["inchi_key"])
        self.of_row = classic.signature_ids(keys, drugbank_table(data), self.consensus)
        rotation, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((978, 978)))
        self.rotation = rotation[: len(genes), : len(genes)] if len(genes) < 978 else rotation

    def embed(self, profiles: pd.DataFrame) -> np.ndarray:
        return profiles.reindex(columns=self.genes).fillna(0.0).to_numpy(np.float64)

    def encode(self, panel: pd.DataFrame) -> np.ndarray:
        if "signature_id" in panel:
            ids = panel["signature_id"]
        else:
            ids = panel["library_row"].map(lambda r: self.of_row.iloc[int(r)])
        z = np.stack(
            [
                self.consensus.loc[i].to_numpy()
                if isinstance(i, str)
                else np.zeros(len(self.genes))
                for i in ids
            ]
        )
        return z @ self.rotation.T

    def predict(self, cells, drugs, dose):
        return cells + drugs @ self.rotation

    def predict_control(self, cells):
        return np.asarray(cells, dtype=np.float64)


def test_sensitivity_suite_runs_on_a_subset(small_data, bundle_model):
    suite = run_sensitivity(
        bundle_model,
        small_data,
        bundle_model.library,
        effects=("published", "contrast"),
        rank_by=("score",),
        doses=DOSES,
        atlas="hpa",
        seed=0,
        shuffle_genes=False,
        **quiet,
    )
    assert suite["n_units"] == 16
    assert {u["source"] for u in suite["units"]} == {"L1000", "HPA"}
    assert suite["n_drugs"] > 50 and suite["n_drugs_with_signature"] >= 8
    found = rows(suite)
    for measure in ("AUC", "LN_IC50", "Z_SCORE"):
        for method in (
            "bundle, published",
            "bundle, contrast",
            classic.METHOD,
            "random",
            "mean response",
        ):
            row = found[(method, measure)]
            assert row["n_units"] == 16, (method, measure)
            assert -1 <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= 1
            assert 0 < row["p_value"] <= 1
    # leave-one-out mean sensitivity over GDSC's other lines predicts a line's AUC well
    assert found[("mean response", "AUC")]["mean"] > 0.5
    assert found[("mean response", "AUC")]["p_value"] < 0.01


def test_planted_signal_is_found_and_gene_shuffling_removes_it(small_data, bundle_model):
    planted = PlantedModel(small_data, bundle_model.library, bundle_model.genes)
    options = {"effects": ("published", "contrast"), "doses": DOSES, "seed": 0, **quiet}
    suite = run_signatures(
        planted, small_data, bundle_model.library, shuffle_genes=False, **options
    )
    found = rows(suite)
    for effect in ("published", "contrast"):
        row = found[(f"bundle, {effect}", "cosine")]
        assert row["mean"] > 0.999 and row["p_value"] < 0.01
    assert found[("mean response", "cosine")]["p_value"] > 0.5  # the same for every compound
    assert found[("random", "cosine")]["p_value"] > 0.01
    shuffled = rows(
        run_signatures(planted, small_data, bundle_model.library, shuffle_genes=True, **options)
    )
    for effect in ("published", "contrast"):
        # Pearson: a gene-shuffled signature keeps its mean, which an uncentred cosine still sees
        row = shuffled[(f"bundle, {effect}", "pearson")]
        assert abs(row["mean"]) < 0.1 and row["p_value"] > 0.05


def test_gene_shuffled_patient_signatures_give_p_values_that_are_not_small(
    small_data, bundle_model, patients
):
    planted = PlantedModel(small_data, bundle_model.library, bundle_model.genes)
    common = {"effects": ("published",), "rank_by": ("score",), "doses": DOSES, "seed": 0}
    common.update(quiet)
    real = score_patients(
        planted, small_data, bundle_model.library, patients, shuffle_genes=False, **common
    )
    # the planted model's score is the classic score: Pearson(measured signature, u - n)
    shared = ~np.isnan(real.classic_shared)
    np.testing.assert_allclose(
        real.methods["published"][shared], real.classic_shared[shared], atol=1e-9
    )
    shuffled = score_patients(
        planted, small_data, bundle_model.library, patients, shuffle_genes=True, **common
    )
    found = rows(run_classes(shuffled, seed=0))
    for method in (
        "bundle, published",
        f"{classic.METHOD}, shared drugs",
        f"{classic.METHOD}, all consensus compounds",
    ):
        assert found[(method, "L01 AUROC")]["p_value"] > 0.05, method


def test_bundle_scores_and_z_are_those_of_score(small_data, bundle_model, patients):
    """validate scores patients exactly as `score` does, for both effects and both rankings."""
    scored = score_patients(
        bundle_model,
        small_data,
        bundle_model.library,
        patients,
        effects=("published", "contrast"),
        rank_by=("score", "z"),
        doses=DOSES,
        seed=0,
        shuffle_genes=False,
        **quiet,
    )
    bundle = bundle_model.bundle
    for effect in ("published", "contrast"):
        options = ScoreOptions(doses=DOSES, draws=1, seed=0, effect=effect)
        ranking = score_patient(bundle, patients, library=bundle_model.library, options=options)
        for i, profile in enumerate(scored.ids):
            table = ranking.ranking[ranking.ranking["profile"] == profile]
            expected = table.set_index("drug_id").loc[bundle_model.library.ids]
            for column, key in (("score", effect), ("z", f"{effect}, z")):
                np.testing.assert_allclose(
                    scored.methods[key][i],
                    expected[column].to_numpy(np.float64),
                    rtol=0,
                    atol=1e-9,
                    equal_nan=True,
                )


def validate_cli(data: DataFolder, out, *extra):
    return runner.invoke(
        app,
        [
            "validate",
            "--data-dir",
            str(data.root),
            "--suites",
            "sensitivity,signatures",
            "--doses",
            "10",
            "--draws",
            "1",
            "--threads",
            "2",
            "--out",
            str(out),
            *extra,
        ],
    )


def test_cli_outputs_are_identical_for_identical_inputs(small_data, tmp_path):
    first = validate_cli(small_data, tmp_path / "a", "--effect", "published,contrast")
    assert first.exit_code == 0, first.output
    second = validate_cli(small_data, tmp_path / "b", "--effect", "published,contrast")
    assert second.exit_code == 0, second.output
    text = (tmp_path / "a" / "validation.json").read_text()
    assert text == (tmp_path / "b" / "validation.json").read_text()
    record = json.loads(text)
    assert set(record["suites"]) == {"sensitivity", "signatures"}
    assert record["options"]["effects"] == ["published", "contrast"]
    assert record["bundle"]["manifest_sha256"] == load_bundle(None).sha256
    assert FILES["gdsc"] in record["data"]
    for name in (
        "summary.md",
        "summary.html",
        "sensitivity_scatter.png",
        "signatures_agreement.png",
        "run.json",
    ):
        assert (tmp_path / "a" / name).is_file(), name
    assert (tmp_path / "a" / "summary.md").read_text() == (
        tmp_path / "b" / "summary.md"
    ).read_text()
    assert "bundle, contrast" in first.output and "classic connectivity" in first.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--suites", "sensitivity,bogus"], "--suites"),
        (["--effect", "published,delta"], "--effect"),
        (["--suites", "classes"], "--patients"),
        (["--normals", "atlas"], "--normals"),
        (["--doses", "10,-1"], "--doses"),
    ],
)
def test_bad_options_exit_2_without_output(small_data, tmp_path, extra, message):
    result = validate_cli(small_data, tmp_path / "out", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_data_exits_2(small_data, tmp_path):
    result = runner.invoke(app, ["validate", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "is not a folder" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(
        app, ["validate", "--data-dir", str(empty), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and FILES["gdsc"] in result.output
    assert not (tmp_path / "o").exists()
    broken = tmp_path / "broken"
    for relative in FILES.values():
        (broken / relative).parent.mkdir(parents=True, exist_ok=True)
        (broken / relative).symlink_to(small_data.root / relative)
    (broken / FILES["gdsc"]).unlink()
    (broken / FILES["gdsc"]).write_text("not parquet")
    result = validate_cli(DataFolder(broken), tmp_path / "o2")
    assert result.exit_code == 2 and "could not be read" in result.output
    assert not (tmp_path / "o2").exists()
    (tmp_path / "taken").mkdir()
    result = validate_cli(small_data, tmp_path / "taken")
    assert result.exit_code == 2 and "already exists" in result.output


def test_options_refuse_duplicates_and_classes_without_patients(small_data, bundle_model):
    with pytest.raises(UserError, match="distinct"):
        ValidateOptions(effects=("published", "published"))
    with pytest.raises(UserError, match="--patients"):
        run_validation(bundle_model, small_data, bundle_model.library, None, ValidateOptions())


def test_validate_opens_no_network_socket_and_writes_only_out_and_cache(small_data, tmp_path):
    """The whole command in a fresh process whose socket calls are logged (an audit hook), with
    an empty HOME: no network socket, nothing written outside --out and unicure-rt's cache."""
    from test_reliability_privacy import AUDIT, ROOT, run_cli, written_under

    site, home = tmp_path / "site", tmp_path / "home"
    site.mkdir()
    home.mkdir()
    (site / "sitecustomize.py").write_text(AUDIT)
    log = tmp_path / "sockets.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "ORT_"))}
    env.update(
        HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]),
        UNICURE_SOCKET_LOG=str(log),
    )
    args = ["validate", "--data-dir", small_data.root, "--suites", "sensitivity,signatures"]
    done = run_cli([*args, "--doses", "10", "--draws", "1", "--out", tmp_path / "v"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = log.read_text().splitlines()
    assert lines and all(line.endswith(" started") for line in lines), lines
    outside = [p for p in written_under(home) if not p.startswith(".cache/unicure-rt/")]
    assert outside == [] and not (home / ".cache" / "Microsoft").exists(), outside
    assert (tmp_path / "v" / "validation.json").is_file()


def test_pathway_rows_find_a_planted_pathway():
    """Scores that put one GDSC pathway's drugs first give that pathway an AUROC of 1."""
    from unicure_rt.analysis.validation.classes import (
        PATHWAY_METRIC,
        PatientScores,
        pathway_enrichment,
    )

    pathways = pd.Series(["MAPK"] * 6 + ["DNA"] * 6 + [None] * 4, dtype=object)
    planted = np.where(pathways == "MAPK", -1.0, 0.0) + np.linspace(0, 0.1, 16)
    shape = (3, 16)
    patients = PatientScores(
        ids=["a", "b", "c"],
        methods={},
        classic_shared=np.full(shape, np.nan),
        labels=np.full(16, np.nan),
        classic_all=np.zeros((3, 1)),
        classic_labels=np.zeros(1),
        n_genes=10,
        pathways=pathways,
    )
    methods = {"bundle, planted": np.broadcast_to(planted, shape).copy()}
    rows, _units, sizes = pathway_enrichment(patients, methods, seed=0)
    assert sizes == {"DNA": 6, "MAPK": 6}
    found = {(r["method"], r["metric"]): r for r in rows}
    assert found[("bundle, planted", PATHWAY_METRIC + "MAPK")]["mean"] == 1.0
    assert found[("bundle, planted", PATHWAY_METRIC + "DNA")]["mean"] == 0.0
