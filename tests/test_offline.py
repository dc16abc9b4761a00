"""Offline operation, safe parsing and privacy.

- Every clinic command (`score`, `embed`, `predict`, `info`) and `export` (whose parity gate
  runs in a child process) succeeds with all network access blocked: Python sockets raise in
  this process, and a `sitecustomize.py` on PYTHONPATH blocks them in child processes too.
- No module of unicure_rt unpickles or runs shell code: an AST scan of the package source.
- Logs and run.json hold sample ids and aggregate QC, never expression values.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from unicure_rt.cli.app import app

PACKAGE = Path(__file__).resolve().parents[1] / "unicure_rt"
LANDMARKS = (PACKAGE / "data" / "landmark_genes.txt").read_text().split()
runner = CliRunner()

BLOCKER = '''
"""Installed by tests/test_offline.py: any attempt to use the network raises."""
import os
import socket


class NetworkBlocked(OSError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkBlocked("network access attempted in an offline test")


class _NoSocket(socket.socket):
    def __init__(self, family=-1, *args, **kwargs):
        if family != getattr(socket, "AF_UNIX", None):
            _refuse()
        super().__init__(family, *args, **kwargs)


socket.socket = _NoSocket
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
socket.gethostbyname = _refuse
marker = os.environ.get("UNICURE_OFFLINE_MARKER")
if marker:
    with open(marker, "a") as handle:
        handle.write(f"{os.getpid()}\\n")
'''


def invoke(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Block the network here and in child processes; yields the child-process marker file."""
    site = tmp_path / "offline_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    marker = tmp_path / "offline_children.txt"
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("UNICURE_OFFLINE_MARKER", str(marker))

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    class NoSocket(socket.socket):
        def __init__(self, family=-1, *args, **kwargs):
            if family != getattr(socket, "AF_UNIX", None):
                refuse()
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", NoSocket)
    for name in ("create_connection", "getaddrinfo", "gethostbyname"):
        monkeypatch.setattr(socket, name, refuse)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(OSError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    return marker


def counts_table(ids, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        rng.poisson(6, size=(len(LANDMARKS), len(ids))), index=LANDMARKS, columns=ids
    )


def test_clinic_commands_run_offline(offline, tiny_bundle, tmp_path):
    counts_table(["t1", "t2", "n"]).to_csv(tmp_path / "p.csv")
    fast = ("--draws", "1", "--doses", "1", "--threads", "1")
    score = invoke(
        "score",
        tmp_path / "p.csv",
        "--bundle",
        tiny_bundle,
        "--normal-where",
        "sample=n",
        "--out",
        tmp_path / "out",
        *fast,
    )
    assert score.exit_code == 0, score.output
    assert (tmp_path / "out" / "ranking.parquet").is_file()
    embed = invoke(
        "embed", tmp_path / "p.csv", "--bundle", tiny_bundle, "--out", tmp_path / "e.parquet"
    )
    assert embed.exit_code == 0, embed.output
    predict = invoke(
        "predict",
        tmp_path / "p.csv",
        "--bundle",
        tiny_bundle,
        "--drug",
        "drug01",
        "--out",
        tmp_path / "p.parquet",
        *fast[:4],
    )
    assert predict.exit_code == 0, predict.output
    info = invoke("info", tiny_bundle, "--json")
    assert info.exit_code == 0, info.output
    assert "CPUExecutionProvider" in json.loads(info.stdout)["available_providers"]


def test_export_runs_offline_including_its_parity_gate_process(offline, tmp_path):
    torch = pytest.importorskip("torch", reason="export needs the [export] extra (torch)")
    from conftest import landmark_vocabulary, tiny_config

    from unicure_rt.train.models import UniCure, add_lora, save_native

    vocabulary, genes = landmark_vocabulary()
    torch.manual_seed(0)
    save_native(
        add_lora(UniCure(tiny_config(len(vocabulary["tokens"])))),
        tmp_path / "ckpt",
        vocabulary=vocabulary,
        genes=genes,
    )
    result = invoke("export", tmp_path / "ckpt", "--out", tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    assert offline.is_file(), "the parity gate did not run in a network-blocked child process"


def test_the_blocker_blocks_child_processes(offline):
    code = "import socket; socket.create_connection(('127.0.0.1', 9))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "NetworkBlocked" in done.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_score_in_a_network_namespace_without_network(tiny_bundle, tmp_path):
    """Below Python too: a whole `score` run in a new network namespace (no interface up)."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged network namespaces are not available here")
    counts_table(["t", "n"]).to_csv(tmp_path / "p.csv")
    code = "from unicure_rt.cli.app import main; main()"
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, "-c", code, "score", str(tmp_path / "p.csv")]
        + ["--bundle", str(tiny_bundle), "--normal-where", "sample=n", "--out"]
        + [str(tmp_path / "out"), "--draws", "1", "--doses", "1", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "run.json").is_file()


# --- safe parsing --------------------------------------------------------------------------------

UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
UNPICKLING_MODULES |= {"marshal"}
# Modules allowed to import pickle, with the reason. Each entry is a decision, not a default:
# none is allowed (Ray blocks travel as JSON + Parquet, see engines/cohort.encode_block).
PICKLE_ALLOWED: dict[str, str] = {}


def package_sources() -> list[tuple[str, ast.AST]]:
    return [
        (path.relative_to(PACKAGE.parent).as_posix(), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def keyword(call: ast.Call, name: str):
    for item in call.keywords:
        if item.arg == name:
            return item.value
    return None


def is_constant(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(tree: ast.AST) -> list[str]:
    """Lines that unpickle or run shell code (see test_package_never_unpickles_or_shells_out)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in UNPICKLING_MODULES:
                    found.append(f"{node.lineno}: import {name}")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(f"{node.lineno}: {name}()")
        if name in ("os.system", "os.popen", "os.spawnl", "os.execv", "pty.spawn"):
            found.append(f"{node.lineno}: {name}()")
        if name.startswith("subprocess.") or last in ("Popen", "check_output", "check_call"):
            shell = keyword(node, "shell")
            if shell is not None and not is_constant(shell, False):
                found.append(f"{node.lineno}: {name}(shell=...)")
            if node.args and not isinstance(node.args[0], ast.List | ast.Tuple | ast.Name):
                found.append(f"{node.lineno}: {name}() with a command that is not a list")
        torch_load = name == "torch.load" or name.endswith(".torch.load")
        if torch_load and not is_constant(keyword(node, "weights_only"), True):
            found.append(f"{node.lineno}: torch.load without weights_only=True")
        np_load = name in ("np.load", "numpy.load")
        if np_load and not is_constant(keyword(node, "allow_pickle"), False):
            found.append(f"{node.lineno}: np.load without allow_pickle=False")
        if name in ("pd.read_pickle", "pandas.read_pickle"):
            found.append(f"{node.lineno}: {name}()")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{node.lineno}: {name}() (use yaml.safe_load)")
        if last == "register_custom_ops_library":
            found.append(f"{node.lineno}: loads a native custom-op library")
    return found


def test_package_never_unpickles_or_shells_out():
    """No pickle (or other code-carrying serialisation), eval/exec, os.system or shell=True;
    torch.load only with weights_only=True; np.load only with allow_pickle=False."""
    problems = {}
    for rel, tree in package_sources():
        found = unsafe_calls(tree)
        if rel in PICKLE_ALLOWED:
            found = [f for f in found if "import" not in f or "pickle" not in f]
        if found:
            problems[rel] = found
    assert not problems, problems


def test_the_scan_catches_what_it_must():
    bad = textwrap.dedent(
        """
        import pickle
        import subprocess, os, torch
        import numpy as np
        eval("1")
        exec("x = 1")
        os.system("ls")
        subprocess.run("ls", shell=True)
        torch.load("m.pt")
        torch.load("m.pt", weights_only=False)
        np.load("a.npy")
        np.load("a.npy", allow_pickle=True)
        """
    )
    assert len(unsafe_calls(ast.parse(bad))) == 10
    good = textwrap.dedent(
        """
        import subprocess, sys, torch
        import numpy as np
        subprocess.run([sys.executable, "-m", "x"], check=False)
        torch.load("m.pt", weights_only=True, map_location="cpu")
        np.load("a.npz", allow_pickle=False)
        model.eval()
        """
    )
    assert unsafe_calls(ast.parse(good)) == []


def test_the_scan_sees_the_calls_the_package_makes():
    """Guard against a vacuous scan: the package's known torch.load and np.load calls are seen."""
    calls = {
        dotted(node.func)
        for _rel, tree in package_sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert {"torch.load", "np.load", "subprocess.run"} <= calls


# --- privacy -------------------------------------------------------------------------------------

DISTINCT = 1234.5678


def renderings(value: float) -> set[str]:
    shown = {f"{value:.4f}", f"{value:.3f}", f"{value:.6g}", repr(value), str(value)}
    return shown | ({f"{value:.2f}", f"{value:.1f}"} if value > 100 else set())


def shown_in(number: str, text: str) -> bool:
    """`number` appears in `text` as a number of its own, not as the digits inside another
    number (a z-score of -19.6843 does not show the value 9.684)."""
    return re.search(rf"(?<![0-9]){re.escape(number)}(?![0-9])", text) is not None


def test_logs_and_run_record_hold_no_expression_values(tiny_bundle, tmp_path):
    """Distinctive values in the input (1234.5678 and neighbours, TPM-like): neither the raw
    values nor the log2 profiles computed from them appear in run.json, stdout or stderr, in
    the table output, the --json output or an error message."""
    rng = np.random.default_rng(3)
    ids = ["PATIENT-A", "PATIENT-B", "NORMAL-1"]
    values = np.round(rng.uniform(100, 900, size=(len(LANDMARKS), 3)), 4) + 0.1111
    values[:40] = DISTINCT + np.arange(40)[:, None] * 1.0001
    table = pd.DataFrame(values, index=LANDMARKS, columns=ids)
    table.to_csv(tmp_path / "p.csv")
    cpm = table / table.sum(axis=0) * 1e6
    log2 = np.log2(cpm + 1)
    secrets = set()
    for v in np.concatenate([values[:60].ravel(), log2.to_numpy()[:60].ravel()]):
        secrets |= renderings(float(v))
    common = ("--bundle", tiny_bundle, "--normal-where", "sample=NORMAL-1", "--draws", "2")
    texts = {}
    for mode in ("table", "json"):
        out = tmp_path / f"out_{mode}"
        extra = ("--json",) if mode == "json" else ()
        result = invoke("score", tmp_path / "p.csv", *common, "--out", out, *extra)
        assert result.exit_code == 0, result.output
        texts[f"output {mode}"] = result.output
        texts[f"run.json {mode}"] = (out / "run.json").read_text()
    assert "PATIENT-A" in texts["run.json table"] and "PATIENT-B" in texts["output table"]
    embed = invoke(
        "embed", tmp_path / "p.csv", "--bundle", tiny_bundle, "--out", tmp_path / "e.parquet"
    )
    texts["embed output"] = embed.output
    bad = table.copy()
    bad.iloc[5, 0] = -DISTINCT
    bad.to_csv(tmp_path / "bad.csv")
    error = invoke("score", tmp_path / "bad.csv", *common)
    assert error.exit_code == 2
    texts["error output"] = error.output
    leaks = {
        where: sorted(s for s in secrets if shown_in(s, text)) for where, text in texts.items()
    }
    assert not any(leaks.values()), leaks
