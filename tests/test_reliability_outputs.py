"""Issue 19, items 1-4 and 10-12: outputs never destroy inputs or each other, interrupted runs
leave nothing that is not cleaned up, `drugs build` is bounded, every command has one error path,
and malformed options are refused. Each test reproduces a failure of the code before the fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from unicure_rt import outputs
from unicure_rt.cli.app import app
from unicure_rt.cli.common import parse_doses
from unicure_rt.errors import UserError

runner = CliRunner()
ROOT = Path(__file__).parents[1]
LANDMARKS = [
    g.strip()
    for g in (ROOT / "unicure_rt" / "data" / "landmark_genes.txt").read_text().splitlines()
    if g.strip()
]
FAST = ("--draws", "1", "--doses", "1", "--threads", "1")


def invoke(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, *phrases):
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    for phrase in phrases:
        assert phrase in text, text


def counts_csv(path: Path, ids=("t", "n"), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.poisson(5, size=(len(LANDMARKS), len(ids))), index=LANDMARKS)
    frame.columns = list(ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path)
    return path


def score(bundle, table, out, *extra):
    return invoke(
        "score", table, "--bundle", bundle, "--normal-where", "sample=n", "--out", out, *FAST,
        *extra,
    )  # fmt: skip


# ---- 1. --force replaces only unicure-rt outputs that hold no input -----------------------


def test_force_never_deletes_the_folder_holding_the_input(tiny_bundle, tmp_path):
    table = counts_csv(tmp_path / "d" / "tcga.csv")
    result = score(tiny_bundle, table, tmp_path / "d", "--force")
    assert_clean_error(result, "an input of this run")
    assert table.is_file()


def test_force_never_replaces_an_input_file(tmp_path):
    table = tmp_path / "emb.csv"
    pd.DataFrame(np.ones((2, 4)), index=["a", "b"]).to_csv(table)
    result = invoke("drugs", "import", table, "--encoder-id", "x", "--out", table, "--force")
    assert_clean_error(result, "an input of this run")
    assert table.read_text().startswith(",0,1,2,3")


def test_force_never_writes_into_or_over_the_bundle(tiny_bundle, tmp_path):
    before = sorted(p.name for p in Path(tiny_bundle).iterdir())
    for out in (tiny_bundle, Path(tiny_bundle) / "models"):
        result = invoke("export-triton", tiny_bundle, "--out", out, "--force")
        assert_clean_error(result, "an input of this run")
    assert sorted(p.name for p in Path(tiny_bundle).iterdir()) == before


def test_force_refuses_a_folder_unicure_rt_did_not_write(tiny_bundle, tmp_path):
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / ".bashrc").write_text("keep")
    table = counts_csv(tmp_path / "in" / "t.csv")
    assert_clean_error(score(tiny_bundle, table, home, "--force"), "not written by unicure-rt")
    assert (home / ".bashrc").read_text() == "keep" and (home / "Documents").is_dir()


@pytest.mark.parametrize("name", [".", ".."])
def test_out_dot_is_refused_without_a_trace(tiny_bundle, tmp_path, monkeypatch, name):
    work = tmp_path / "work" / "here"
    table = counts_csv(tmp_path / "in" / "t.csv")
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    result = score(tiny_bundle, table, name, "--force")
    assert_clean_error(result, "current folder")
    assert "space" not in result.output
    assert list(work.iterdir()) == [] and sorted(p.name for p in work.parent.iterdir()) == ["here"]


def test_a_mount_point_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "mnt"
    out.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == out.resolve())
    with pytest.raises(UserError, match="mount point"):
        outputs.refuse_existing(out, True)


def test_every_writer_marks_its_output(tiny_bundle, tmp_path):
    table = counts_csv(tmp_path / "in" / "t.csv")
    assert score(tiny_bundle, table, tmp_path / "s").exit_code == 0
    assert json.loads((tmp_path / "s" / "run.json").read_text())["unicure_rt"]
    embed = invoke("embed", table, "--bundle", tiny_bundle, "--out", tmp_path / "e.parquet")
    assert embed.exit_code == 0, embed.output
    for out in (tmp_path / "s", tmp_path / "e.parquet", Path(tiny_bundle)):
        assert outputs._written_by_unicure(out), out
    again = invoke(
        "embed", table, "--bundle", tiny_bundle, "--out", tmp_path / "e.parquet", "--force"
    )
    assert again.exit_code == 0, again.output
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "foreign.parquet")
    assert not outputs._written_by_unicure(tmp_path / "foreign.parquet")


# ---- 2. two runs to one new --out: exactly one wins ---------------------------------------

RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from unicure_rt.errors import UserError
    from unicure_rt.outputs import staged_output_dir
    out, go, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    try:
        with staged_output_dir(out) as staging:
            (staging / "who.txt").write_text(tag)
            while not go.exists():
                time.sleep(0.005)
    except UserError as exc:
        print(exc)
        sys.exit(2)
    """
)


def test_two_concurrent_runs_never_both_succeed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for trial in range(5):
        out, go = tmp_path / f"out{trial}", tmp_path / f"go{trial}"
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(out), str(go), tag],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for tag in ("a", "b")
        ]
        time.sleep(1.0)
        go.touch()
        codes = [r.wait(timeout=60) for r in racers]
        assert sorted(codes) == [0, 2], codes
        winner = "ab"[codes.index(0)]
        assert (out / "who.txt").read_text() == winner
        loser = racers[codes.index(2)].stdout.read()
        assert "appeared while this run was writing" in " ".join(loser.split())
    assert not [p for p in tmp_path.iterdir() if outputs.PARTIAL in p.name]


def test_a_file_that_appears_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "e.parquet"
    with pytest.raises(UserError, match="appeared"), outputs.staged_output_file(out) as target:
        target.write_text("mine")
        out.write_text("theirs")
    assert out.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["e.parquet"]


# ---- 3. kill -9 leaves a partial that the next run removes --------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from unicure_rt.outputs import staged_output_dir
    with staged_output_dir(Path(sys.argv[1])) as staging:
        (staging / "ranking.parquet").write_bytes(b"half")
        print("ready", flush=True)
        time.sleep(120)
    """
)


def _holder(out: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if outputs.PARTIAL in p.name)


def test_a_killed_runs_partial_is_removed_by_the_next_run(tmp_path, capsys):
    victim = _holder(tmp_path / "out")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert len(_partials(tmp_path)) == 2  # the partial and its owner lock file
    with outputs.staged_output_dir(tmp_path / "other") as staging:
        (staging / "x").write_text("x")
    assert _partials(tmp_path) == []
    assert "Removed 1 partial output" in capsys.readouterr().err


def test_a_live_runs_partial_is_left_alone(tmp_path):
    live = _holder(tmp_path / "out")
    try:
        before = _partials(tmp_path)
        with outputs.staged_output_dir(tmp_path / "other") as staging:
            (staging / "x").write_text("x")
        assert _partials(tmp_path) == before and len(before) == 2
    finally:
        live.kill()
        live.wait()


def test_a_partial_without_owner_is_reported_not_removed(tmp_path, capsys):
    stray = tmp_path / ".out.partial-abcd1234"
    stray.mkdir()
    assert outputs.clean_stale_partials(tmp_path) == []
    assert stray.is_dir() and "no owner file" in capsys.readouterr().err


# ---- 4. drugs build is bounded per molecule and cleans up on SIGTERM ----------------------


@pytest.fixture(scope="module")
def rdkit_bundle(tmp_path_factory):
    pytest.importorskip("rdkit", reason="RDKit is needed for drugs build")
    from test_drugs import _make_rdkit_bundle

    return _make_rdkit_bundle(tmp_path_factory.mktemp("bundles") / "rdkit", seed=0)[0]


def test_a_huge_smiles_is_skipped_quickly(rdkit_bundle, tmp_path):
    table = tmp_path / "drugs.csv"
    pd.DataFrame(
        {"drug_id": ["aspirin", "huge"], "smiles": ["CC(=O)Oc1ccccc1C(=O)O", "C" * 200_000]}
    ).to_csv(table, index=False)
    started = time.perf_counter()
    result = invoke(
        "drugs", "build", table, "--bundle", rdkit_bundle.path, "--out", tmp_path / "l.parquet"
    )
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 60
    assert "huge" in result.output and "atoms" in result.output


def test_sigterm_during_drugs_build_leaves_no_file(rdkit_bundle, tmp_path):
    table = tmp_path / "drugs.csv"
    pd.DataFrame(
        {"drug_id": [f"d{i}" for i in range(40_000)], "smiles": ["c1ccccc1" * 40] * 40_000}
    ).to_csv(table, index=False)
    out = tmp_path / "out" / "lib.parquet"
    process = subprocess.Popen(
        [sys.executable, "-c", "from unicure_rt.cli.app import main; main()", "drugs", "build",
         str(table), "--bundle", str(rdkit_bundle.path), "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and not (out.parent.exists() and _partials(out.parent)):
        time.sleep(0.05)
    assert _partials(out.parent), "the build never started writing"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output
    assert "Traceback" not in output
    assert list(out.parent.iterdir()) == []


# ---- 10. one error path: every command, a bad input, exit 2 -------------------------------


def _commands(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_walk_finds_every_command():
    names = {" ".join(path) for path, _ in ALL_COMMANDS}
    assert {"score", "embed", "predict", "stratify", "drugs build", "drugs import"} <= names
    assert len(names) >= 10


# What typer's rich help shows when it is not turned off, and markup left in a help text.
HELP_ARTEFACTS = ("<bool>", "<int range>", "…", "╭", "\\[", "[/")


@pytest.mark.parametrize(
    "path", [(), ("drugs",), ("kit",), *(p for p, _ in ALL_COMMANDS)], ids=" ".join
)
def test_every_help_reads_cleanly(path):
    result = runner.invoke(app, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    found = [artefact for artefact in HELP_ARTEFACTS if artefact in result.output]
    assert not found, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    usage, blank, *rest = result.output.splitlines()
    assert usage.startswith("Usage: unicure-rt") and blank == ""
    description = rest[: rest.index("")]
    for line, following in pairwise(description):  # each line filled: no break of its own
        assert len(line) + 1 + len(following.split()[0]) > 80, result.output


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=" ".join)
def test_every_command_turns_a_missing_input_into_exit_2(path, tmp_path):
    command = dict(ALL_COMMANDS)[path]
    missing = tmp_path / "does-not-exist.csv"
    args = list(path)
    for param in command.params:
        if param.param_type_name == "argument":
            args.append(missing)
        elif param.required:
            args += [param.opts[0], tmp_path / "out" if "out" in param.name else "x"]
    if not any(p.param_type_name == "argument" for p in command.params):
        args += (
            ["--bundle", missing] if "--bundle" in sum((p.opts for p in command.params), []) else []
        )
    if path == ("predict",):
        args += ["--drug", "x"]
    if path == ("info",):
        args = ["info", missing]
    result = invoke(*args)
    assert_clean_error(result)
    assert result.output.lstrip().startswith("Error"), result.output
    assert not (tmp_path / "out").exists()


def _embeddings(defect: str) -> pd.DataFrame:
    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(4, 512)))
    frame.index = ["a", "a", "b", "c"] if defect == "duplicate ids" else ["a", "b", "c", "d"]
    if defect == "NaN":
        frame.iloc[1, 5] = np.nan
    if defect == "Inf":
        frame.iloc[2, 0] = np.inf
    return (
        frame.iloc[:, :100]
        if defect == "wrong width"
        else frame.iloc[:0]
        if defect == "empty"
        else frame
    )


@pytest.mark.parametrize("defect", ["duplicate ids", "NaN", "Inf", "wrong width", "empty"])
def test_drugs_import_refuses_a_bad_table_with_exit_2(tmp_path, defect):
    """These were 40-line tracebacks with exit 1: the drugs commands lacked the error path."""
    _embeddings(defect).to_csv(tmp_path / "embeddings.csv")
    out = tmp_path / "lib.parquet"
    args = ("--encoder-id", "unimol-512", "--dim", "512", "--out", out)
    assert_clean_error(invoke("drugs", "import", tmp_path / "embeddings.csv", *args))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.csv"]


# ---- 11. seeds, text ranks, long names, $ in labels ---------------------------------------


@pytest.mark.parametrize("command", ["score", "embed", "predict", "stratify"])
def test_a_negative_seed_is_a_clean_error(tiny_bundle, tmp_path, command):
    table = counts_csv(tmp_path / "t.csv")
    out = tmp_path / ("e.parquet" if command == "embed" else "out")
    args = [command, table, "--out", out, "--seed", "-1"]
    if command != "stratify":
        args += ["--bundle", tiny_bundle]
    if command == "predict":
        args += ["--drug", "x"]
    result = invoke(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--seed" in result.output and not out.exists()


def test_text_ranks_are_refused(tmp_path):
    ranking = tmp_path / "ranking.csv"
    pd.DataFrame(
        {"profile": ["a", "a", "b", "b"], "drug_id": ["x", "y", "x", "y"], "rank": [1, "two", 2, 1]}
    ).to_csv(ranking, index=False)
    assert_clean_error(invoke("stratify", ranking, "--out", tmp_path / "s"), "not finite numbers")


def test_a_300_character_out_name_is_a_clean_error(tiny_bundle, tmp_path):
    table = counts_csv(tmp_path / "in" / "t.csv")
    assert_clean_error(score(tiny_bundle, table, tmp_path / ("x" * 300)), "shorter --out")
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_a_partial_of_a_long_but_valid_name_fits(tmp_path):
    with outputs.staged_output_dir(tmp_path / ("y" * 250)) as staging:
        (staging / "a").write_text("a")
    assert (tmp_path / ("y" * 250) / "a").is_file()


def test_dollar_signs_in_sample_ids_do_not_break_the_report(tiny_bundle, tmp_path):
    table = counts_csv(tmp_path / "t.csv", ids=("$\\frac{a$", "$x^2$", "n"))
    result = score(tiny_bundle, table, tmp_path / "out", "--report")
    assert result.exit_code == 0, result.output
    assert "$x^2$" in (tmp_path / "out" / "report.html").read_text()


# ---- 12. --doses is taken as written or refused -------------------------------------------


@pytest.mark.parametrize("text", ["", ",", " , ", "1,,2", "1,", "1e9", "nan", "-1", "1,1", "x"])
def test_malformed_doses_are_refused(text):
    with pytest.raises(UserError, match="--doses|Dose"):
        parse_doses(text)


def test_doses_outside_the_trained_range_warn(capsys):
    assert parse_doses("0.04, 20") == (0.04, 20.0)
    assert "outside the model's trained range" in " ".join(capsys.readouterr().err.split())
    assert parse_doses("0.04,10") == (0.04, 10.0)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("text", ["", "1,,2", "1e9"])
def test_the_cli_refuses_malformed_doses_before_any_work(tiny_bundle, tmp_path, text):
    table = counts_csv(tmp_path / "t.csv")
    for command in ("score", "predict"):
        args = [command, table, "--bundle", tiny_bundle, "--doses", text]
        args += ["--drug", "x"] if command == "predict" else ["--normal-where", "sample=n"]
        assert_clean_error(invoke(*args), "--doses" if text != "1e9" else "not a usable")
