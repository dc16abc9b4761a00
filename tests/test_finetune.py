"""Fine-tuning: paired-data reading, the residual adaptor, export with the adaptor folded in."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch", reason="fine-tuning needs the [export] extra (torch)")

from unicure_rt.bundle.load import load_bundle  # noqa: E402
from unicure_rt.cli.app import app  # noqa: E402
from unicure_rt.errors import UserError  # noqa: E402
from unicure_rt.train import finetune as ft  # noqa: E402
from unicure_rt.train.export.pipeline import default_output_genes  # noqa: E402

GENES = default_output_genes()
PLATE_META = (
    "cell_id",
    "pert_id",
    "pert_iname",
    "pert_type",
    "pert_dose",
    "pert_dose_unit",
    "pert_time",
    "pert_time_unit",
)


def paired_table(n_groups=2, n_drugs=3, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        base = rng.uniform(4, 12, size=len(GENES))
        for _ in range(3):
            rows.append(
                {
                    "group": f"m{g}",
                    "condition": "control",
                    "drug": "",
                    "dose_uM": 0.0,
                    **dict(zip(GENES, base + rng.normal(0, 0.1, len(GENES)), strict=True)),
                }
            )
        for d in range(n_drugs):
            for dose in (1.0, 10.0):
                rows.append(
                    {
                        "group": f"m{g}",
                        "condition": "treated",
                        "drug": f"drug{d:02d}",
                        "dose_uM": dose,
                        **dict(zip(GENES, base + rng.normal(0, 0.3, len(GENES)), strict=True)),
                    }
                )
    return pd.DataFrame(rows)


def test_read_paired_groups_conditions(tmp_path):
    paired_table().to_parquet(tmp_path / "p.parquet")
    data = ft.read_paired(tmp_path / "p.parquet", GENES)
    assert len(data.conditions) == 2 * 3 * 2
    assert data.controls.shape == (6, 978) and data.genes_present.all()
    first = data.conditions[0]
    assert first.group == "m0" and first.treated.shape == (1, 978)
    assert [data.control_groups[i] for i in first.control_rows] == ["m0"] * 3


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop(columns=["dose_uM"]), "lacks the column"),
        (lambda t: t[~((t.group == "m1") & (t.condition == "control"))], "no baseline profile"),
        (lambda t: t.assign(**{GENES[0]: -1.0}), "negative"),
        (lambda t: t.drop(columns=GENES[:600]), "covers 378 of 978"),
    ],
)
def test_bad_paired_data(tmp_path, change, message):
    change(paired_table()).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(UserError, match=message):
        ft.read_paired(tmp_path / "p.parquet", GENES)


def test_residual_adaptor_starts_as_identity():
    x = torch.randn(5, 978)
    torch.testing.assert_close(ft.ResidualAdaptor(978).eval()(x), x)


def evaluation_table(base: float, tuned: float, n_conditions: int = 4) -> pd.DataFrame:
    """An evaluation as `ft.evaluate` returns it, with `delta_pearson_all` set per model."""
    rows = [
        {**dict.fromkeys(ft.METRICS, 0.5), "model": model, ft.DECIDING_METRIC: value}
        for model, value in (("base", base), ("fine-tuned", tuned))
    ]
    return pd.DataFrame(rows).assign(n_conditions=n_conditions)


def finetune_result(evaluation: pd.DataFrame, hidden: int = 8) -> ft.FinetuneResult:
    """A result as `ft.finetune` returns it: an adaptor that changes the output, a record."""
    adaptor = ft.ResidualAdaptor(978, hidden=hidden).eval()
    torch.nn.init.normal_(adaptor.net[3].weight, std=0.05)
    record = {
        "base_bundle_sha256": "0" * 64,
        "epochs_run": 7,
        "best_validation_loss": 0.25,
        "split_sizes": {"test": 4, "validation": 4, "train": 12},
        "options": {**ft.FinetuneOptions(hidden=hidden).__dict__, "runtime": None},
        "data_qc": {
            "source": {"file": "paired.parquet", "sha256": "a" * 64},
            "output_genes_measured": 978,
            "n_groups": 2,
            "n_controls": 6,
            "n_conditions": 20,
        },
    }
    return ft.FinetuneResult(adaptor, evaluation, [], {}, record)


def test_folded_adaptor_matches_flexpert_plus_adaptor(tiny_bundle, tmp_path):
    result = finetune_result(evaluation_table(0.4, 0.5), hidden=64)
    manifest = ft.export_finetuned(load_bundle(tiny_bundle), result, tmp_path / "tuned")
    bundle = load_bundle(tmp_path / "tuned")
    assert manifest["parity"][-1]["case"] == "finetuned_adaptor"
    assert manifest["parity"][-1]["max_abs"] < 1e-5
    assert "finetuned" in bundle.manifest["provenance"]
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(bundle.graph_path("flexpert")), providers=["CPUExecutionProvider"]
    )
    assert [o.name for o in session.get_outputs()] == ["expression"]
    assert [i.name for i in session.get_inputs()] == ["cell_embedding", "drug"]


def test_worse_than_base_compares_the_deciding_metric():
    assert ft.worse_than_base(evaluation_table(0.40, 0.45)) is None
    assert ft.worse_than_base(evaluation_table(0.40, 0.40)) is None
    verdict = ft.worse_than_base(evaluation_table(0.45, 0.40, n_conditions=9))
    assert "0.400" in verdict and "0.450" in verdict and "9 held-out" in verdict
    assert ft.worse_than_base(evaluation_table(0.45, float("nan"))) is not None
    assert ft.worse_than_base(evaluation_table(float("nan"), 0.40)) is None


def test_exported_bundle_has_its_own_model_card(tmp_path):
    base = load_bundle()
    result = finetune_result(evaluation_table(0.45, 0.40))
    manifest = ft.export_finetuned(base, result, tmp_path / "tuned")
    tuned = load_bundle(tmp_path / "tuned")  # verifies every file against the manifest
    card = (tuned.path / ft.MODEL_CARD).read_text()
    assert {ft.MODEL_CARD, ft.BASE_MODEL_CARD} <= set(manifest["files"])
    assert (tuned.path / ft.BASE_MODEL_CARD).read_bytes() == (
        base.path / ft.MODEL_CARD
    ).read_bytes()
    assert card != (base.path / ft.MODEL_CARD).read_text()
    assert base.sha256 in card and "paired.parquet" in card and "7 epoch(s)" in card
    assert "| fine-tuned | 0.500 | 0.500 | 0.500 | 0.500 | 0.400 |" in card
    assert "worse than its base" in card


def fake_finetune(evaluation: pd.DataFrame):
    """`ft.finetune` replaced by one that reports its last epoch and returns a fixed result."""

    def run(bundle, data, options, progress=ft.no_progress):
        progress("fine-tuning", options.epochs, options.epochs, "validation loss 0.2500")
        return finetune_result(evaluation)

    return run


def invoke_finetune(tmp_path, *extra):
    paired_table().to_parquet(tmp_path / "p.parquet")
    args = ["finetune", tmp_path / "p.parquet", "--out", tmp_path / "run", *extra]
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_bundle_worse_than_its_base_is_exported_only_with_force(tmp_path, monkeypatch):
    monkeypatch.setattr(ft, "finetune", fake_finetune(evaluation_table(0.45, 0.40)))
    refused = invoke_finetune(tmp_path, "--export", tmp_path / "tuned")
    assert refused.exit_code == 2, refused.output
    assert "worse than its base" in refused.output and "--force" in refused.output
    assert "Traceback" not in refused.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "tuned").exists()
    forced = invoke_finetune(tmp_path, "--export", tmp_path / "tuned", "--force")
    assert forced.exit_code == 0, forced.output
    assert "Warning" in forced.stderr and "worse than its base" in forced.stderr
    assert "worse than its base" in (tmp_path / "tuned" / ft.MODEL_CARD).read_text()


def test_finetune_json_and_progress_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(ft, "finetune", fake_finetune(evaluation_table(0.40, 0.45)))
    result = invoke_finetune(tmp_path, "--export", tmp_path / "tuned", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {
        "evaluation",
        "deciding_metric",
        "worse_than_base",
        "epochs_run",
        "best_validation_loss",
        "split_sizes",
        "base_bundle_sha256",
        "out",
        "export",
    }
    assert [row["model"] for row in summary["evaluation"]] == ["base", "fine-tuned"]
    for row in summary["evaluation"]:
        assert set(ft.METRICS) | {"model", "n_conditions"} == set(row)
        assert all(isinstance(row[m], float) for m in ft.METRICS)
    assert summary["deciding_metric"] == ft.DECIDING_METRIC
    assert summary["worse_than_base"] is False and isinstance(summary["epochs_run"], int)
    assert summary["export"]["manifest_sha256"] == load_bundle(tmp_path / "tuned").sha256
    assert summary["out"] == str(tmp_path / "run")
    assert result.stderr == ""  # --json: nothing but the JSON, and no progress
    (tmp_path / "plain").mkdir()
    shown = invoke_finetune(tmp_path / "plain")
    assert shown.exit_code == 0, shown.output
    lines = shown.stderr.splitlines()
    assert lines[0] == "fine-tuning: started"
    assert lines[1].startswith("fine-tuning validation loss 0.2500: 200/200 (")


def plate_paired(shared_data, tmp_path):
    """The real A375 dose plate as paired data: DMSO wells are the baselines."""
    bundle = load_bundle()
    names = {n.casefold() for n in ft.resolve_library(bundle, None).names}
    plate = pd.read_parquet(shared_data / "l1000" / "cmap_plate_LJP005_A375_24H.parquet")
    plate = plate[
        (plate.pert_type == "ctl_vehicle")
        | ((plate.pert_type == "trt_cp") & plate.pert_iname.str.casefold().isin(names))
    ]
    meta = pd.DataFrame(
        {
            "group": plate.cell_id,
            "condition": np.where(plate.pert_type == "ctl_vehicle", "control", "treated"),
            "drug": plate.pert_iname,
            "dose_uM": pd.to_numeric(plate.pert_dose).where(plate.pert_type == "trt_cp", 0.0),
        }
    )
    path = tmp_path / "plate.parquet"
    pd.concat([meta, plate.drop(columns=list(PLATE_META))], axis=1).to_parquet(path)
    return path


def test_finetune_bundled_model_on_the_a375_plate(shared_data, tmp_path):
    path = plate_paired(shared_data, tmp_path)
    out, exported = tmp_path / "run", tmp_path / "bundle"
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(path),
            "--out",
            str(out),
            "--export",
            str(exported),
            "--epochs",
            "15",
            "--patience",
            "5",
            "--force",  # export even if worse than the base (said below)
        ],
    )
    assert result.exit_code == 0, result.output
    evaluation = pd.read_csv(out / "evaluation.csv").set_index("model")
    assert list(evaluation.index) == ["base", "fine-tuned"]
    assert evaluation["n_conditions"].iloc[0] >= 40
    assert np.isfinite(evaluation[["pearson", "r2", "delta_pearson_all"]].to_numpy()).all()
    record = json.loads((out / "checkpoint" / "adaptor.json").read_text())
    assert record["split_sizes"]["test"] == evaluation["n_conditions"].iloc[0]
    assert load_bundle(exported).manifest["provenance"]["finetuned"]["epochs_run"] >= 1
    progress = result.stderr.splitlines()  # no terminal: plain lines per stage
    for stage in ("embedding", "predicting", "fine-tuning"):
        assert f"{stage}: started" in progress
    last = [line for line in progress if line.startswith("fine-tuning ")][-1]
    label, count = last.split(": ")
    assert label.startswith("fine-tuning best validation loss ")
    assert count.startswith(f"{record['epochs_run']}/{record['epochs_run']} (")
    deciding = evaluation[ft.DECIDING_METRIC]
    worse = deciding["fine-tuned"] < deciding["base"]
    card = (exported / ft.MODEL_CARD).read_text()
    assert ("worse than its base" in " ".join(result.stderr.split())) == worse
    assert ("worse than its base" in card) == worse and path.name in card
    assert (exported / ft.BASE_MODEL_CARD).read_bytes() == (
        load_bundle().path / ft.MODEL_CARD
    ).read_bytes()
