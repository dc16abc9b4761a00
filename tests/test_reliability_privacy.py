"""Issue 19, items 9, 15 and 16, and two gaps of the first round: no run opens a network socket
or writes outside --out and unicure-rt's documented cache (ONNX Runtime's telemetry is off);
run.json names input files without their folders; outputs are owner-only unless asked; a CSV
output is marked so --force may replace it; a killed Ray worker's block partial is removed.
Each test reproduces a failure of the code before the fix."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_reliability_outputs import ROOT, assert_clean_error, counts_csv, invoke

from unicure_rt import outputs

FAST = ("--draws", "1", "--doses", "1", "--threads", "1")

# ---- 9. no socket, no file outside --out and the documented cache -------------------------

AUDIT = textwrap.dedent(
    '''
    """Installed by tests/test_reliability_privacy.py: logs every network socket call."""
    import os
    import socket
    import sys

    LOG = os.environ["UNICURE_SOCKET_LOG"]


    def _log(line):
        with open(LOG, "a") as handle:
            handle.write(f"{os.getpid()} {line}\\n")


    def _hook(event, args):
        if event == "socket.__new__" and args[1] not in (socket.AF_UNIX, -1):
            _log(f"socket family {args[1]}")
        elif event in ("socket.connect", "socket.sendto", "socket.bind"):
            if getattr(args[0], "family", None) != socket.AF_UNIX:
                _log(f"{event} {args[1:]!r}")
        elif event.startswith("socket.gethostby") or event == "socket.getaddrinfo":
            _log(f"{event} {args!r}")


    sys.addaudithook(_hook)
    _log("started")
    '''
)


def run_cli(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from unicure_rt.cli.app import main; main()", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def written_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def audited(tmp_path):
    """An environment whose Python processes log their socket calls, with an empty HOME."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(AUDIT)
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "sockets.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "ORT_"))}
    env.update(
        HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]),
        UNICURE_SOCKET_LOG=str(log),
    )
    return env, home, log


def test_clinic_commands_open_no_socket_and_write_only_out_and_cache(
    audited, tiny_bundle, tmp_path
):
    """onnxruntime 1.31 wrote a device id and an event queue under
    ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ (and looked up its telemetry host)."""
    env, home, log = audited
    table = counts_csv(tmp_path / "in" / "t.csv", ids=("t1", "t2", "n"))
    outs = tmp_path / "outs"
    commands = [
        ["score", table, "--bundle", tiny_bundle, "--normal-where", "sample=n", "--out",
         outs / "score", "--report", *FAST],
        ["embed", table, "--bundle", tiny_bundle, "--out", outs / "e.parquet"],
        ["predict", table, "--bundle", tiny_bundle, "--drug", "drug01", "--out",
         outs / "p.csv", *FAST[:4]],
        ["export-triton", tiny_bundle, "--out", outs / "models"],
        ["verify", tiny_bundle],
    ]  # fmt: skip
    for args in commands:
        done = run_cli(args, env)
        assert done.returncode == 0, done.stdout + done.stderr
    lines = log.read_text().splitlines()
    assert len([line for line in lines if line.endswith(" started")]) == len(commands)
    assert [line for line in lines if not line.endswith(" started")] == []
    outside = [p for p in written_under(home) if not p.startswith(".cache/unicure-rt/")]
    assert outside == [], outside
    assert not (home / ".cache" / "Microsoft").exists()


def test_export_opens_no_socket_in_any_of_its_processes(audited, tmp_path):
    torch = pytest.importorskip("torch", reason="export needs the [export] extra (torch)")
    from conftest import landmark_vocabulary, tiny_config

    from unicure_rt.train.models import UniCure, add_lora, save_native

    env, home, log = audited
    vocabulary, genes = landmark_vocabulary()
    torch.manual_seed(0)
    save_native(
        add_lora(UniCure(tiny_config(len(vocabulary["tokens"])))),
        tmp_path / "ckpt",
        vocabulary=vocabulary,
        genes=genes,
    )
    done = run_cli(["export", tmp_path / "ckpt", "--out", tmp_path / "bundle"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = log.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) >= 2, "the parity gate process was not seen"
    assert [line for line in lines if not line.endswith(" started")] == []
    assert not (home / ".cache" / "Microsoft").exists()


def test_score_makes_no_native_socket_call(tiny_bundle, tmp_path):
    """Below Python: strace sees every socket(2) of the process and its threads, so ONNX
    Runtime's own (C++) telemetry client would show up here."""
    strace = subprocess.run(["strace", "-o", "/dev/null", "true"], capture_output=True)
    if strace.returncode != 0:
        pytest.skip("strace is not installed or ptrace is not allowed here")
    table = counts_csv(tmp_path / "in" / "t.csv")
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path / "home")}
    env = {k: v for k, v in env.items() if not k.startswith("ORT_")}
    done = subprocess.run(
        ["strace", "-f", "-e", "trace=socket,connect", "-o", str(trace), sys.executable, "-c",
         "from unicure_rt.cli.app import main; main()", "score", str(table), "--bundle",
         str(tiny_bundle), "--normal-where", "sample=n", "--out", str(tmp_path / "out"), *FAST],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [line for line in trace.read_text().splitlines() if "socket(" in line]
    assert [line for line in calls if "AF_UNIX" not in line] == []
    assert not (tmp_path / "home" / ".cache" / "Microsoft").exists()


# ---- 15. run.json names files, not the folders they are in --------------------------------


def test_run_json_holds_file_names_and_sha256_not_paths(tiny_bundle, tmp_path):
    """The absolute input path (here with a patient's name in a folder) was in every output."""
    table = counts_csv(tmp_path / "Jane_Doe_MRN4711" / "tumour.csv")
    out = tmp_path / "out"
    args = ["score", table, "--bundle", tiny_bundle, "--normal-where", "sample=n", *FAST]
    result = invoke(*args, "--out", out, "--report")
    assert result.exit_code == 0, result.output
    for name in ("run.json", "report.html"):
        text = (out / name).read_text()
        assert "Jane_Doe" not in text and str(tmp_path) not in text, name
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"][0]["name"] == "tumour.csv" and "path" not in run["inputs"][0]
    assert len(run["inputs"][0]["sha256"]) == 64
    assert run["bundle"]["name"] == Path(tiny_bundle).name and run["input_qc"]["input"]["name"]
    kept = invoke(*args, "--out", tmp_path / "kept", "--record-paths")
    assert kept.exit_code == 0, kept.output
    run = json.loads((tmp_path / "kept" / "run.json").read_text())
    assert run["inputs"][0]["path"] == str(table.resolve())
    assert run["inputs"][0]["name"] == "tumour.csv"


# ---- 16. outputs are owner-only, or shared when asked -------------------------------------


def modes(folder: Path) -> set[str]:
    return {oct(stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_outputs_are_owner_only_by_default_and_shared_on_request(tiny_bundle, tmp_path, umask_022):
    table = counts_csv(tmp_path / "in" / "t.csv")
    args = ["score", table, "--bundle", tiny_bundle, "--normal-where", "sample=n", *FAST]
    assert invoke(*args, "--out", tmp_path / "private").exit_code == 0
    assert modes(tmp_path / "private") == {"0o700", "0o600"}
    embed = ["embed", table, "--bundle", tiny_bundle, "--out"]
    assert invoke(*embed, tmp_path / "e.parquet").exit_code == 0
    assert modes(tmp_path / "e.parquet") == {"0o600"}
    shared = invoke("--shared-permissions", *args, "--out", tmp_path / "shared")
    assert shared.exit_code == 0, shared.output
    assert modes(tmp_path / "shared") == {"0o755", "0o644"}
    assert invoke(*embed, tmp_path / "again.parquet").exit_code == 0  # the option does not stick
    assert modes(tmp_path / "again.parquet") == {"0o600"}


def test_execute_bits_survive_private_permissions(tmp_path):
    with outputs.staged_output_dir(tmp_path / "kit") as staging:
        (staging / "install.sh").write_text("#!/bin/sh\n")
        (staging / "install.sh").chmod(0o755)
        (staging / "sub").mkdir()
    assert oct(stat.S_IMODE((tmp_path / "kit" / "install.sh").stat().st_mode)) == "0o700"
    assert modes(tmp_path / "kit" / "sub") == {"0o700"}


# ---- CSV outputs carry a marker, so --force replaces them (and only them) -----------------


def test_a_csv_output_is_replaced_with_force_but_a_users_csv_is_not(
    tiny_bundle, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    table = counts_csv(tmp_path / "in" / "t.csv")
    out = tmp_path / "p.csv"
    args = ["predict", table, "--bundle", tiny_bundle, "--drug", "drug01", *FAST[:4], "--out", out]
    assert invoke(*args).exit_code == 0
    again = invoke(*args, "--force")
    assert again.exit_code == 0, again.output
    edited = out.read_text() + "my note\n"
    out.write_text(edited)
    assert_clean_error(invoke(*args, "--force"), "not written by unicure-rt")
    assert out.read_text() == edited
    mine = tmp_path / "mine.csv"
    mine.write_text("a,b\n1,2\n")
    assert_clean_error(invoke(*args[:-1], mine, "--force"), "not written by unicure-rt")
    assert mine.read_text() == "a,b\n1,2\n"


# ---- Ray block partials are under owner locks ---------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from unicure_rt.outputs import owner_lock
    partial = Path(sys.argv[1])
    with owner_lock(partial):
        partial.write_bytes(b"half a block")
        print("ready", flush=True)
        time.sleep(120)
    """
)


def _writer(partial: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(partial)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_killed_workers_block_partial_is_removed_and_a_live_one_kept(tmp_path):
    """A worker killed while writing left `.part-*.parquet.partial-PID` in the final dataset."""
    import pyarrow as pa

    from unicure_rt.engines.cohort import write_part

    dataset = tmp_path / "ranking.parquet"
    write_part(pa.table({"rank": [1, 2]}), dataset, 0, 0)
    assert sorted(p.name for p in dataset.iterdir()) == ["part-00000-00000.parquet"]
    dead = _writer(dataset / f".part-00001-00000.parquet{outputs.PARTIAL}111")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    live = _writer(dataset / f".part-00002-00000.parquet{outputs.PARTIAL}222")
    try:
        assert outputs.clean_stale_partials(dataset) == [".part-00001-00000.parquet.partial-111"]
        names = sorted(p.name for p in dataset.iterdir())
        assert names == [
            ".part-00002-00000.parquet.partial-222",
            ".part-00002-00000.parquet.partial-222.owner",
            "part-00000-00000.parquet",
        ]
    finally:
        live.kill()
        live.wait()
