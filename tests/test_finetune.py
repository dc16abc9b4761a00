"""Fine-tuning: paired-data reading, the residual adaptor, export with the adaptor folded in."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch", reason="fine-tuning needs the [export] extra (torch)")

from unicure_rt import finetune as ft  # noqa: E402
from unicure_rt.bundle import load_bundle  # noqa: E402
from unicure_rt.cli.app import app  # noqa: E402
from unicure_rt.errors import UserError  # noqa: E402
from unicure_rt.export.pipeline import default_output_genes  # noqa: E402

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


def test_folded_adaptor_matches_flexpert_plus_adaptor(tiny_bundle, tmp_path):
    adaptor = ft.ResidualAdaptor(978, hidden=64).eval()
    torch.nn.init.normal_(adaptor.net[3].weight, std=0.05)
    result = ft.FinetuneResult(
        adaptor, pd.DataFrame([{"model": "x", "n_conditions": 1}]), [], {}, {"epochs_run": 0}
    )
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
