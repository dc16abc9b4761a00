"""Training code of the bundled demo model: losses, data loading and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("onnxruntime")

from unicure_rt.train.losses import direction_loss, mmd, stage2_loss  # noqa: E402


def _shared_data() -> Path | None:
    env = os.environ.get("UNICURE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if (path / "l1000" / "cmap_plate_LJP005_A375_24H.parquet").is_file() else None


DATA = _shared_data()
needs_data = pytest.mark.skipif(
    DATA is None,
    reason="shared public data not found (set UNICURE_SHARED_DATA or place it at ../shared/data)",
)


# ------------------------------------------------------------------------------------ losses


def test_mmd_of_identical_sets_is_zero():
    x = torch.randn(12, 978, generator=torch.Generator().manual_seed(0))
    assert abs(float(mmd(x, x.clone()))) < 1e-5


def test_mmd_grows_with_distance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 50, generator=g)
    y = torch.randn(8, 50, generator=g)
    assert float(mmd(x, y + 5.0)) > float(mmd(x, y)) > -1e-6


def test_stage2_mse_term_has_gradient():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(4, 978, generator=g, requires_grad=True)
    real = torch.randn(2, 978, generator=g)
    ctrl = torch.randn(978, generator=g)
    mse_only, _ = stage2_loss(pred, real, ctrl, w_mse=1.0, w_cos=0.0, w_mmd=0.0)
    mse_only.backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    expected = ((pred.mean(0) - real.mean(0)) ** 2).mean()
    assert torch.allclose(mse_only, expected)


def test_stage2_loss_is_zero_for_a_perfect_group():
    real = torch.randn(3, 20, generator=torch.Generator().manual_seed(3))
    ctrl = torch.zeros(20)
    loss, terms = stage2_loss(real.clone(), real, ctrl)
    assert float(loss) < 1e-5 and terms["mse"] < 1e-10


def test_batched_losses_equal_the_loss_of_each_group():
    """Stage 2 computes a batch of groups at once: the same values as one group at a time."""
    g = torch.Generator().manual_seed(4)
    pred = torch.randn(5, 4, 978, generator=g)
    real = torch.randn(5, 2, 978, generator=g)
    ctrl = torch.randn(5, 978, generator=g)
    no_drug = torch.randn(5, 4, 978, generator=g)
    batched, terms = stage2_loss(pred, real, ctrl)
    one_by_one = [stage2_loss(pred[i], real[i], ctrl[i]) for i in range(5)]
    torch.testing.assert_close(batched, torch.stack([loss for loss, _ in one_by_one]))
    for key in ("mse", "cos", "mmd"):
        assert terms[key] == pytest.approx(sum(t[key] for _, t in one_by_one), rel=1e-5)
    torch.testing.assert_close(
        mmd(pred, real), torch.stack([mmd(pred[i], real[i]) for i in range(5)])
    )
    batched, terms = direction_loss(pred, no_drug, real[:, 0])
    one_by_one = [direction_loss(pred[i], no_drug[i], real[i, 0]) for i in range(5)]
    torch.testing.assert_close(batched, torch.stack([loss for loss, _ in one_by_one]))
    assert terms["signature_cos"] == pytest.approx(
        sum(t["signature_cos"] for _, t in one_by_one), rel=1e-5
    )


def test_torch_drug_vectors_match_drugs_module():
    from unicure_rt.drugs.vectors import drug_vectors
    from unicure_rt.train.demo import torch_drug_vectors

    emb = np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32)
    doses = np.array([0.04, 1.11, 10.0])
    got = torch_drug_vectors(torch.from_numpy(emb), torch.from_numpy(doses).float(), 528).numpy()
    np.testing.assert_allclose(got, drug_vectors(emb, doses), rtol=0, atol=1e-6)


# -------------------------------------------------------------------------------------- data


@needs_data
def test_plate_loading():
    from unicure_rt.train import data as D

    genes = D.landmark_genes(DATA)["symbol"].tolist()
    plate = D.load_plate(DATA, genes)
    assert (plate["pert_type"] == "trt_cp").sum() == 328
    assert (plate["pert_type"] == "ctl_vehicle").sum() == 26
    assert len(D.plate_controls(plate, genes)) == 26
    smiles = D.plate_smiles(plate, D.lincs_compounds(DATA))
    kinase = set(plate.loc[plate["pert_type"] == "trt_cp", "pert_id"])
    assert len(kinase) == 55
    resolved = {p for p in kinase if smiles[p]}
    # 47 of the 55 plate drugs have a LINCS SMILES; the 8 others are unnamed BRD ids.
    assert len(resolved) == 47
    from unicure_rt.drugs.fingerprints import morgan_count_fingerprints

    _fps, valid = morgan_count_fingerprints([smiles[p] for p in sorted(resolved)])
    assert valid.all()


@needs_data
def test_treated_groups_and_profiles():
    from unicure_rt.train import data as D

    genes = D.landmark_genes(DATA)["symbol"].tolist()
    treated = D.treated_data(DATA, genes)
    plate = [c for c in treated.conditions if c.source == "plate"]
    pairs = [c for c in treated.conditions if c.source == "transigen"]
    assert len(pairs) == 100 and all(c.dose_um == D.TRANSIGEN_DOSE_UM for c in pairs)
    assert len({(c.drug, c.dose_um) for c in plate}) == len(plate)
    assert all(c.treated.shape[1] == 978 for c in treated.conditions)
    assert len(treated.unresolved) == 8
    profiles = D.unperturbed_profiles(DATA, genes)
    assert len(profiles) == 164 + 26 + 15 + 100 + 69 + 61 + 29  # + HPA lines, tissues, GTEx
    assert np.isfinite(profiles.values).all() and profiles.values.max() < 20  # log2, not counts
    vocab = D.build_vocabulary(D.landmark_genes(DATA))
    assert vocab["tokens"][:3] == ["<pad>", "<cls>", "<chrom_close>"]
    assert sum(t.startswith("gene:") for t in vocab["tokens"]) == 978


def test_direction_loss_scores_the_contrast_effect_only_by_direction():
    torch.manual_seed(0)
    no_drug = torch.randn(4, 978)
    signature = torch.randn(978)
    loss, _ = direction_loss(no_drug + 3.0 * signature, no_drug, signature)
    assert float(loss) < 1e-6  # same direction at another scale: nothing to learn
    loss, _ = direction_loss(no_drug - signature, no_drug, signature)
    assert abs(float(loss) - 1.0) < 1e-5  # the opposite direction: 0.5 * (1 - (-1))


@needs_data
def test_signature_groups_map_structures_by_inchikey():
    from unicure_rt.train import data as D

    genes = D.landmark_genes(DATA)["symbol"].tolist()
    conditions, controls, mapping = D.signature_conditions(DATA, genes)
    assert mapping == {
        "modz_signatures": 272,
        "modz_mapped": 272,
        "consensus_compounds": 1170,
        "consensus_mapped_by_inchikey": 685,
    }
    consensus = [c for c in conditions if c.source == "consensus"]
    assert len(consensus) == 685 and all(c.kind == "signature" for c in conditions)
    assert {c.control for c in consensus} == {"baseline:averaged"}
    assert all(c.control in controls and c.treated.shape == (1, 978) for c in conditions)
    modz_doses = {c.dose_um for c in conditions if c.source == "modz"}
    assert {10.0, 0.5, 0.1} <= modz_doses


@needs_data
def test_consensus_cluster_split_keeps_held_out_structures_out_of_training():
    from unicure_rt.drugs.fingerprints import tanimoto_matrix
    from unicure_rt.train import data as D
    from unicure_rt.train import evaluate as E

    genes = D.landmark_genes(DATA)["symbol"].tolist()
    conditions, _controls, _mapping = D.signature_conditions(DATA, genes)
    train, test, info = E.cluster_split(conditions, tanimoto_matrix, seed=0)
    again = E.cluster_split(conditions, tanimoto_matrix, seed=0)
    assert (train, test) == (again[0], again[1])  # fixed by the seed
    assert not set(train) & set(test) and 60 <= len(test) <= 120
    assert max(info.values()) < 0.4  # no training structure within the cluster threshold


@needs_data
def test_joint_split_holds_every_split_out_of_one_training_set():
    from unicure_rt.drugs.fingerprints import tanimoto_matrix
    from unicure_rt.train import data as D
    from unicure_rt.train import evaluate as E

    genes = D.landmark_genes(DATA)["symbol"].tolist()
    conditions = D.treated_data(DATA, genes).conditions
    train, splits = E.joint_split(conditions, tanimoto_matrix, seed=0, n_held_drugs=10)
    assert E.joint_split(conditions, tanimoto_matrix, seed=0, n_held_drugs=10) == (train, splits)
    assert list(splits) == ["unseen_drug_dose", "unseen_drug", "unseen_consensus_cluster"]
    trained = set(train)
    train_drugs = {conditions[i].drug for i in train}
    dose_test, _ = splits["unseen_drug_dose"]
    drug_test, drug_info = splits["unseen_drug"]
    cluster_test, cluster_info = splits["unseen_consensus_cluster"]
    for test in (dose_test, drug_test, cluster_test):
        assert test and not trained & set(test)
    # an unseen dose of a seen drug: every other condition of its drug is trained on
    for i in dose_test:
        others = {j for j, c in enumerate(conditions) if c.drug == conditions[i].drug} - {i}
        assert others and others <= trained
    held_drugs = {conditions[i].drug for i in drug_test}
    assert len(held_drugs) == 10 and not held_drugs & train_drugs
    assert set(drug_info) == held_drugs and max(drug_info.values()) < 1.0
    # the consensus split alone holds out the same compounds; joint training is its subset
    alone_train, alone_test, _ = E.cluster_split(conditions, tanimoto_matrix, seed=0)
    assert alone_test == cluster_test and trained < set(alone_train)
    assert max(cluster_info.values()) < 0.4


@needs_data
def test_permuting_the_antineoplastic_flag_changes_no_score():
    """The flag is an evaluation label: scores and ranks never depend on it."""
    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.patients.load import load_patient
    from unicure_rt.scoring.options import ScoreOptions, resolve_library
    from unicure_rt.scoring.pipeline import score_patient

    bundle = load_bundle()
    library = resolve_library(bundle, None)
    example = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"
    patient = load_patient(example, normal_where="condition=normal")
    options = ScoreOptions(doses=(1.0,), draws=1)
    flags = library.metadata["antineoplastic"].to_numpy()
    shuffled = library.metadata.assign(
        antineoplastic=flags[np.random.default_rng(0).permutation(len(flags))]
    )
    permuted = dataclasses.replace(library, metadata=shuffled)
    first = score_patient(bundle, patient, library=library, options=options).ranking
    second = score_patient(bundle, patient, library=permuted, options=options).ranking
    assert not first["antineoplastic"].equals(second["antineoplastic"])
    columns = ["profile", "drug_id", "rank", "score"]
    assert first[columns].equals(second[columns])


# ------------------------------------------------------------------------------ smoke run


def tiny_run_config(**overrides):
    """A demo run of a few seconds: a small backbone, 16 stage-1 profiles, 24 treated groups."""
    from unicure_rt.train.demo import DemoConfig

    settings = dict(
        model={"n_layers": 2, "lora_layers": (1,), "sample_size": 32, "head_hidden": 64},
        s1a_epochs=1,
        s1b_epochs=1,
        embed_draws=1,
        max_stage1_profiles=16,
        s1_holdout_fraction=0.25,
        max_conditions=24,
        evaluate=False,
    )
    return DemoConfig(**(settings | overrides))


@needs_data
@pytest.mark.slow
def test_tiny_training_run_gives_a_loadable_bundle(tmp_path):
    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.drugs.encoder import encode_smiles
    from unicure_rt.drugs.library import load_library
    from unicure_rt.train.demo import run_demo

    cfg = tiny_run_config(s2_epochs=1, library_limit=20)
    record = run_demo(DATA, tmp_path / "run", tmp_path / "bundle", cfg, log=None)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest["drug_encoder"]["kind"] == "rdkit-morgan-counts"
    assert bundle.manifest["library"] == "drugs.parquet"
    assert (tmp_path / "bundle" / "MODEL_CARD.md").read_text().startswith("# unicure-rt")
    library = load_library(bundle.library_path, encoder_id=bundle.drug_encoder["id"])
    assert len(library) == 20
    emb = encode_smiles([library.metadata["smiles"].iloc[0]], bundle)
    np.testing.assert_allclose(emb[0], library.embeddings[0], atol=2e-3)  # float16 storage
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()
    assert record["bundle"]["total_bytes"] > 0
    stage1 = record["stage1"]  # a quarter of the 16 profiles stay out of stage 1 for its R²
    assert (stage1["stage1_fit_profiles"], stage1["stage1_held_out_profiles"]) == (12, 4)
    assert np.isfinite(
        [stage1["stage1_held_out_r2"], stage1["stage1_held_out_count_probe_r2"]]
    ).all()


@needs_data
@pytest.mark.slow
def test_stage2_on_a_reused_stage1_reproduces_the_full_run(tmp_path):
    from safetensors.numpy import load_file

    from unicure_rt.train.demo import Stage1NotReusable, run_demo

    cfg = tiny_run_config(s2_epochs=2)
    full = run_demo(DATA, tmp_path / "full", None, cfg, log=None)
    reused_cfg = dataclasses.replace(cfg, stage1_from=str(tmp_path / "full"))
    reused = run_demo(DATA, tmp_path / "reused", None, reused_cfg, log=None)
    weights = [
        load_file(str(tmp_path / run / "checkpoint" / "model.safetensors"))
        for run in ("full", "reused")
    ]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert np.array_equal(weights[0][key], weights[1][key]), key
    assert reused["stage1"]["reused_from"]["seed"] == full["seed"]
    assert reused["stage1"]["stage1_held_out_r2"] == full["stage1"]["stage1_held_out_r2"]
    with pytest.raises(Stage1NotReusable, match="s1a_epochs"):
        run_demo(
            DATA,
            tmp_path / "other",
            None,
            dataclasses.replace(reused_cfg, s1a_epochs=2),
            log=None,
        )
    with pytest.raises(Stage1NotReusable, match="not a run folder"):
        run_demo(
            DATA,
            tmp_path / "other",
            None,
            dataclasses.replace(cfg, stage1_from=str(tmp_path / "nowhere")),
            log=None,
        )


@needs_data
@pytest.mark.slow
def test_stage2_keeps_the_moving_average_of_its_weights(tmp_path):
    """`s2_ema_decay` replaces the last step's stage-2 weights by their moving average: a decay
    near 0 keeps the last step's weights, 0.5 keeps an average; the backbone is untouched."""
    from safetensors.numpy import load_file

    from unicure_rt.train.demo import run_demo

    cfg = tiny_run_config(s2_epochs=3, s2_ema_decay=None)
    run_demo(DATA, tmp_path / "last", None, cfg, log=None)
    reuse = dataclasses.replace(cfg, stage1_from=str(tmp_path / "last"))
    for name, decay in (("copy", 1e-12), ("average", 0.5)):
        run_demo(
            DATA, tmp_path / name, None, dataclasses.replace(reuse, s2_ema_decay=decay), log=None
        )

    def weights(run: str, file: str) -> dict:
        return load_file(str(tmp_path / run / "checkpoint" / file))

    for file in ("model.safetensors", "drug_projection.safetensors"):
        last, copy, average = (weights(run, file) for run in ("last", "copy", "average"))
        assert last.keys() == copy.keys() == average.keys()
        for key in last:
            np.testing.assert_allclose(copy[key], last[key], rtol=0, atol=1e-6, err_msg=key)
        stage2 = [k for k in last if file != "model.safetensors" or k.startswith("flexpert.")]
        assert stage2 and all(not np.allclose(average[k], last[k]) for k in stage2 if last[k].std())
        for key in set(last) - set(stage2):
            assert np.array_equal(average[key], last[key]), key


def test_train_cli_passes_stage2_settings_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    """`--s2-weight-decay` and `--s2-ema-decay` reach the run's DemoConfig; a bad value is a
    usage error (exit 2) that names the option, before anything is trained."""
    from unicure_rt.train import demo
    from unicure_rt.train.__main__ import main

    data = tmp_path / "data"
    (data / "l1000").mkdir(parents=True)
    seen = {}

    def fake_run_demo(data_dir, out, bundle_out, cfg, log, command):
        seen["cfg"] = cfg
        return {"timing_seconds": {"total": 0.0}}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    base = ["demo", "--data", str(data), "--out", str(tmp_path / "out")]
    assert main([*base, "--s2-weight-decay", "1.0", "--s2-ema-decay", "none"]) == 0
    assert seen["cfg"].s2_weight_decay == 1.0 and seen["cfg"].s2_ema_decay is None
    assert main(base) == 0
    assert seen["cfg"].s2_weight_decay == demo.DemoConfig().s2_weight_decay
    for option, value in (("--s2-weight-decay", "-1"), ("--s2-weight-decay", "nan"),
                          ("--s2-ema-decay", "1.5")):  # fmt: skip
        seen.clear()
        with pytest.raises(SystemExit) as exit_info:
            main([*base, option, value])
        assert exit_info.value.code == 2 and not seen
        assert option in capsys.readouterr().err
