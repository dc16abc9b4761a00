"""Drug pairs (`unicure_rt.scoring.combinations`, `score --combinations`): the arms chosen, both
orders fed with the published drug input, the additive baseline and synergy against planted stub
models, and the command line end to end."""

from __future__ import annotations

import itertools
import json
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fake_bundles import per_drug_flexpert_inputs
from typer.testing import CliRunner

from unicure_rt.cli.app import app
from unicure_rt.drugs.build import import_library
from unicure_rt.drugs.library import load_library
from unicure_rt.drugs.vectors import DRUG_VECTOR_LENGTH
from unicure_rt.errors import UserError
from unicure_rt.outputs import PARQUET_MARKER_KEY
from unicure_rt.scoring.combinations import (
    EXTRAPOLATION_NOTE,
    SCORE_COLUMNS,
    PairOptions,
    choose_arms,
    profile_pairs,
)
from unicure_rt.scoring.options import ScoreOptions
from unicure_rt.scoring.runner import FlexPertRunner

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"
N_GENES = 978
runner = CliRunner()


class StubFlexPert:
    """A FlexPert stand-in with `.run(["expression"], feeds)`: expression = base(cell) +
    f(arm A) + f(arm B) (+ `interaction` * f(A) * f(B), + `order` * f(A)), where f is a fixed
    non-linear map of a 528-value arm vector with f(0) = 0. A 528-value input is one arm (a
    drug with a control arm, or the control itself), a 1,056-value input two arms in order.
    Every drug input it is fed is recorded."""

    def __init__(self, interaction: float = 0.0, order: float = 0.0, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(scale=0.05, size=(DRUG_VECTOR_LENGTH, N_GENES))
        self.cell_weights = rng.normal(scale=0.05, size=(1280, N_GENES))
        self.base = rng.normal(loc=5.0, size=N_GENES)
        self.interaction, self.order = interaction, order
        self.fed: list[np.ndarray] = []

    def effect(self, arm: np.ndarray) -> np.ndarray:
        return np.tanh(arm.astype(np.float64)) @ self.weights

    def get_inputs(self):
        return per_drug_flexpert_inputs()

    def run(self, outputs, feeds):
        assert outputs == ["expression"]
        cells, drugs = feeds["cell_embedding"], feeds["drug"]
        assert cells.dtype == np.float32 and drugs.dtype == np.float32
        assert len(cells) == len(drugs)
        self.fed.append(drugs.copy())
        out = self.base + np.tanh(cells.astype(np.float64)) @ self.cell_weights
        if drugs.shape[1] == DRUG_VECTOR_LENGTH:
            out = out + self.effect(drugs)
        else:
            assert drugs.shape[1] == 2 * DRUG_VECTOR_LENGTH
            a, b = self.effect(drugs[:, :DRUG_VECTOR_LENGTH]), self.effect(drugs[:, 528:])
            out = out + a + b + self.interaction * a * b + self.order * a
        return [out.astype(np.float32)]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """12 drugs; drug11 is a copy of drug00 (same embedding, another id)."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(3)
    values = rng.normal(size=(12, 512))
    values[11] = values[0]
    table = pd.DataFrame(values, index=[f"drug{i:02d}" for i in range(12)])
    table.index.name = "name"
    table.to_parquet(root / "emb.parquet")
    import_library(root / "emb.parquet", encoder_id="unimol-512", out=root / "drugs.parquet")
    return load_library(root / "drugs.parquet", encoder_id="unimol-512")


def single_ranking(library, ranks) -> pd.DataFrame:
    """A profile's single-drug table as `score_patient` builds it (indexed by library row)."""
    return pd.DataFrame(
        {
            "profile": "P1",
            "sample": "S1",
            "group": None,
            "drug_id": library.ids,
            "drug_name": library.names,
            "rank": pd.array(ranks, dtype="Int64"),
            "score": np.linspace(-0.5, 0.5, len(library)),
        }
    )


def profile(seed: int = 0):
    rng = np.random.default_rng(seed)
    cell = rng.normal(size=1280).astype(np.float32)
    genes = np.sort(rng.choice(N_GENES, size=900, replace=False))
    tumour = rng.normal(loc=6.0, size=len(genes))
    normal = tumour + rng.normal(scale=0.5, size=len(genes))
    return cell, genes, tumour, normal


def pairs_of(session, library, ranks, options: ScoreOptions, pairs: PairOptions):
    cell, genes, tumour, normal = profile()
    flexpert = FlexPertRunner(session, library, options)
    table = single_ranking(library, ranks)
    return profile_pairs(flexpert, cell, genes, tumour, normal, table, options, pairs)


RANKS = [3, 1, 5, 2, None, 4, 8, 6, 7, 9, 10, 1]  # drug11 (a copy of drug00) ties for rank 1


def test_arms_are_the_top_distinct_drugs_then_the_partners(library):
    ranking = single_ranking(library, RANKS)
    arms = choose_arms(ranking, library, PairOptions(top=4, partners=(9, 1, 9)))
    # rank order, library order in ties: drug01 and drug11 (rank 1), drug03, then drug00 is
    # skipped (same embedding as drug11), drug05 (rank 4); the partner drug01 is already in
    assert arms.rows == [1, 11, 3, 5, 9]
    np.testing.assert_array_equal(arms.embeddings, library.embeddings[arms.rows])
    assert arms.pairs == list(itertools.combinations(range(5), 2))
    only_named = choose_arms(ranking, library, PairOptions(top=0, partners=(4, 2)))
    assert only_named.rows == [4, 2] and only_named.pairs == [(0, 1)]


@pytest.mark.parametrize("effect", ["published", "contrast"])
def test_additive_stub_gives_zero_synergy_and_no_order_effect(library, effect):
    """The planted check: when the model's pair prediction is exactly the sum of the arms'
    effects, the pair and its additive baseline are the same prediction: synergy 0."""
    options = ScoreOptions(effect=effect, permutations=200, rank_by="z")
    pairs = PairOptions(top=6, doses=(0.37, 3.33), batch=8)  # 4 pairs per batch: several batches
    table = pairs_of(StubFlexPert(), library, RANKS, options, pairs)
    assert len(table) == comb(6, 2)
    assert table["score"].notna().all()
    np.testing.assert_allclose(table["synergy"], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["score"], table["additive_score"], atol=1e-6)
    np.testing.assert_allclose(table["order_difference"], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["z"], table["additive_z"], atol=1e-3)
    assert table["best_single_score"].equals(np.fmin(table["score_a"], table["score_b"]))
    assert (table["p_value"] > 0).all() and (table["fdr"] >= table["p_value"]).all()
    assert table["rank"].tolist() == sorted(table["rank"].tolist())  # best first, ranked by z
    assert table["z"].is_monotonic_increasing


def test_interaction_and_order_effects_show(library):
    options = ScoreOptions(effect="contrast", permutations=0)
    pairs = PairOptions(top=4, doses=(1.11,))
    additive = pairs_of(StubFlexPert(), library, RANKS, options, pairs)
    interacting = pairs_of(StubFlexPert(interaction=3.0), library, RANKS, options, pairs)
    ordered = pairs_of(StubFlexPert(order=1.0), library, RANKS, options, pairs)
    assert np.abs(interacting["synergy"]).min() > 1e-3
    assert np.abs(ordered["order_difference"]).min() > 1e-3
    # without a null: no z / p / FDR columns, ranked by score
    assert "z" not in additive and "fdr" not in additive
    assert list(additive.columns[-len(SCORE_COLUMNS) + 4 :]) == [
        c for c in SCORE_COLUMNS if c not in ("z", "p_value", "fdr", "additive_z")
    ]
    assert additive["score"].is_monotonic_increasing


def test_both_orders_are_fed_with_the_published_drug_input(library):
    """Singles go in as 528-value vectors (a drug with a control arm), pairs as [A | B] and
    [B | A] at every dose of A with every dose of B."""
    stub = StubFlexPert()
    doses = (0.12, 10.0)
    options = ScoreOptions(effect="published", permutations=0)
    table = pairs_of(stub, library, RANKS, options, PairOptions(top=3, doses=doses))
    widths = [f.shape[1] for f in stub.fed]
    assert widths.count(528) == 1 + len(doses)  # the no-drug row, then the arms at each dose
    assert widths.count(1056) == 2 * len(doses) ** 2
    control = [f for f in stub.fed if f.shape[1] == 528 and not f.any()]
    assert len(control) == 1 and control[0].shape == (1, 528)
    fed = np.concatenate([f for f in stub.fed if f.shape[1] == 1056])
    seen = {row.tobytes() for row in fed}
    assert len(fed) == len(table) * 2 * len(doses) ** 2
    for row in fed:
        swapped = np.concatenate([row[528:], row[:528]])
        assert swapped.tobytes() in seen
    dose_values = {np.float32(np.log10(d + 1.0)) for d in doses}
    pairs_fed = {(row[527], row[1055]) for row in fed}
    assert pairs_fed == set(itertools.product(dose_values, repeat=2))
    assert set(table["best_dose_a_uM"]) <= set(doses)


def test_pair_scores_do_not_depend_on_the_batch(library):
    options = ScoreOptions(effect="contrast", permutations=100)
    small = pairs_of(StubFlexPert(), library, RANKS, options, PairOptions(top=5, batch=2))
    large = pairs_of(StubFlexPert(), library, RANKS, options, PairOptions(top=5, batch=4096))
    pd.testing.assert_frame_equal(small, large, check_exact=False, rtol=1e-12)
    again = pairs_of(StubFlexPert(), library, RANKS, options, PairOptions(top=5, batch=4096))
    pd.testing.assert_frame_equal(large, again, check_exact=True)  # same inputs, same output


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top": 1}, "at least 2"),
        ({"top": -3, "partners": (1,)}, "at least 2"),
        ({"doses": ()}, "at least one dose"),
        ({"doses": (1.0, float("nan"))}, "non-negative"),
    ],
)
def test_bad_pair_options(kwargs, message):
    with pytest.raises(UserError, match=message):
        PairOptions(**kwargs)


# ----------------------------------------------------------------------------- command line


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def score_example(bundle, *extra):
    return invoke(
        "score",
        EXAMPLE,
        "--bundle",
        bundle,
        "--normal-where",
        "condition=normal",
        "--draws",
        "1",
        "--permutations",
        "50",
        *extra,
    )


def test_score_combinations_end_to_end(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    args = ("--combinations", "--combination-top", "4", "--combine-with", "drug07", "--top", "3")
    result = score_example(tiny_bundle, *args, "--out", out, "--report")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert EXTRAPOLATION_NOTE in text and "and combinations.parquet" in text
    table = pd.read_csv(out / "combinations.csv")
    ranking = pd.read_csv(out / "ranking.csv")
    profiles = ranking["profile"].unique()
    assert list(table["profile"].unique()) == list(profiles)
    for profile in profiles:
        rows = table[table["profile"] == profile]
        singles = ranking[ranking["profile"] == profile].set_index("drug_id")
        assert len(rows) in (comb(5, 2), comb(4, 2))  # drug07 may be among the top 4
        assert "drug07" in set(rows["drug_a_id"]) | set(rows["drug_b_id"])
        np.testing.assert_array_equal(
            rows["single_rank_a"], singles.loc[rows["drug_a_id"], "rank"].to_numpy()
        )
        np.testing.assert_allclose(rows["synergy"], rows["score"] - rows["additive_score"])
    stored = pq.read_table(out / "combinations.parquet")
    assert PARQUET_MARKER_KEY in stored.schema.metadata
    pd.testing.assert_frame_equal(stored.to_pandas(), pd.read_parquet(out / "combinations.parquet"))
    run = json.loads((out / "run.json").read_text())
    record = run["combinations"]
    assert record["top"] == 4 and record["partners"] == ["drug07"]
    assert record["doses_uM"] == [0.37, 1.11, 3.33] and record["flexpert_rows_per_pair"] == 18
    assert record["note"] == EXTRAPOLATION_NOTE
    assert run["timings_s"]["combinations_s"] > 0
    page = (out / "report.html").read_text()
    assert "Top drug pairs per sample" in page and "extrapolations" in page


def test_score_combinations_json(tiny_bundle):
    args = ("--combinations", "--combination-top", "3", "--combination-doses", "1", "--json")
    result = score_example(tiny_bundle, *args, "--top", "2")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    pairs = payload["combinations"]
    assert pairs["note"] == EXTRAPOLATION_NOTE
    assert set(pairs["profiles"]) == set(payload["profiles"])
    for rows in pairs["profiles"].values():
        assert rows and all(row["rank"] <= 2 for row in rows)
        assert {"drug_a_id", "drug_b_id", "score", "additive_score", "synergy", "fdr"} <= set(
            rows[0]
        )


@pytest.mark.parametrize(
    "args, message",
    [
        (("--combination-top", "5"), "add --combinations"),
        (("--combine-with", "drug01", "--combination-doses", "1"), "add --combinations"),
        (("--combinations", "--combine-with", "not-a-drug"), "not in library"),
        (("--combinations", "--combine-with", "drug01,,drug02"), "empty name"),
        (("--combinations", "--combination-top", "1"), "at least 2"),
        (("--combinations", "--combination-doses", "1,x"), "--combination-doses must be"),
        (("--combinations", "--combination-doses", "1,1"), "--combination-doses repeats"),
        (("--combinations", "--engine", "ray"), "--combinations is not available"),
    ],
)
def test_bad_combination_options_exit_2(tiny_bundle, tmp_path, args, message):
    out = tmp_path / "out"
    result = score_example(tiny_bundle, "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists()


# ----------------------------------------------------------------------------- predict A+B


def test_predict_pair_is_the_mean_of_both_orders_with_the_published_input(tiny_bundle, tmp_path):
    from reference_multidrug import multidrug_input

    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.patients.load import load_profiles
    from unicure_rt.runtime.embed import embed_profiles, mean_embedding
    from unicure_rt.runtime.sessions import RuntimeOptions, create_session
    from unicure_rt.runtime.tokenizer import Tokenizer
    from unicure_rt.scoring.options import resolve_library

    out = tmp_path / "pairs.parquet"
    args = ("--drug", "drug03+drug07", "--drug", "drug01", "--doses", "1,10", "--draws", "1")
    result = invoke("predict", EXAMPLE, "--bundle", tiny_bundle, *args, "--out", out)
    assert result.exit_code == 0, result.output
    assert EXTRAPOLATION_NOTE in " ".join(result.output.split())
    predictions = pd.read_parquet(out)
    assert PARQUET_MARKER_KEY in pq.read_schema(out).metadata
    assert set(predictions["drug_id"]) == {"drug03+drug07", "drug01"}
    assert len(predictions) == 10 * 2 * 2

    bundle = load_bundle(tiny_bundle)
    library = resolve_library(bundle, None)
    profiles = load_profiles(EXAMPLE)
    backbone, _ = create_session(bundle.graph_path("backbone"), RuntimeOptions(device="cpu"))
    flexpert, _ = create_session(bundle.graph_path("flexpert"), RuntimeOptions(device="cpu"))
    tokenizer = Tokenizer.from_spec(bundle.tokenizer)
    draws = embed_profiles(backbone, tokenizer, profiles.tumour, seed=0, draws=1)
    cells, _ = mean_embedding(draws)
    embeddings = {n: library.embeddings[library.index_of(n)] for n in ("drug03", "drug07")}
    for dose in (1.0, 10.0):
        orders = [
            np.stack([multidrug_input(embeddings, a, dose, b, dose) for _ in cells])
            for a, b in (("drug03", "drug07"), ("drug07", "drug03"))
        ]
        assert orders[0].shape[1] == 1056
        expected = np.mean(
            [
                flexpert.run(
                    ["expression"], {"cell_embedding": cells, "drug": o.astype(np.float32)}
                )[0].astype(np.float64)
                for o in orders
            ],
            axis=0,
        )
        rows = predictions[
            (predictions["drug_id"] == "drug03+drug07") & (predictions["dose_uM"] == dose)
        ]
        assert list(rows["profile"]) == [str(p) for p in profiles.tumour.index]
        np.testing.assert_allclose(rows[bundle.genes].to_numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--drug", "drug01+nothing"), "not in library"),
        (("--drug", "drug01+drug02+drug03"), "pairs only"),
        (("--drug", "drug01+"), "pairs only"),
    ],
)
def test_predict_bad_pairs_exit_2(tiny_bundle, tmp_path, args, message):
    out = tmp_path / "p.parquet"
    result = invoke("predict", EXAMPLE, "--bundle", tiny_bundle, *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_smiles_pairs_split_outside_brackets():
    from unicure_rt.cli.predict import smiles_arms

    assert smiles_arms("C[N+](C)(C)C") == ["C[N+](C)(C)C"]
    assert smiles_arms("CCO+C[N+](C)(C)C") == ["CCO", "C[N+](C)(C)C"]
    assert smiles_arms("[Na+].[Cl-]+c1ccccc1") == ["[Na+].[Cl-]", "c1ccccc1"]
    for bad in ("CCO+CC+CO", "CCO+", "+CCO"):
        with pytest.raises(UserError, match="pairs only"):
            smiles_arms(bad)
