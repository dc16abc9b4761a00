"""An interrupted `unicure-rt score` leaves no output and says so.

A real `unicure-rt score` process gets SIGINT (Ctrl-C) or SIGTERM (a scheduler's time limit)
while it computes, or while it writes its staged output folder. It must exit with 130 (SIGINT)
or 143 (SIGTERM) and a one-line message, print no traceback, and leave nothing in the output's
parent folder: no output folder, no `.partial` staging folder.

The child is the real CLI. To know *when* to interrupt, a preamble wraps a third-party call
the run is certain to make (ONNX Runtime's `InferenceSession.run` while computing; pandas'
`DataFrame.to_csv` inside the staged output folder) so that it touches a marker file and, for
the writing stage, pauses long enough for the signal to land there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unicure_rt"
LANDMARKS = (PACKAGE / "data" / "landmark_genes.txt").read_text().split()

PREAMBLE = """
import os, signal, sys, time
marker, stage = os.environ["UNICURE_TEST_MARKER"], os.environ["UNICURE_TEST_STAGE"]
# a test run started in the background (`cmd &`) inherits SIGINT ignored, and so would this
# child; a user at a terminal has Ctrl-C, so give the child Python's own handler back
signal.signal(signal.SIGINT, signal.default_int_handler)

def touch():
    if not os.path.exists(marker):
        open(marker, "w").close()

if stage == "computing":
    import onnxruntime
    run = onnxruntime.InferenceSession.run
    def watched_run(self, *args, **kwargs):
        touch()
        return run(self, *args, **kwargs)
    onnxruntime.InferenceSession.run = watched_run
else:
    import pandas
    to_csv = pandas.DataFrame.to_csv
    def slow_to_csv(self, *args, **kwargs):
        touch()
        time.sleep(30)  # the signal arrives here, inside the staged output folder
        return to_csv(self, *args, **kwargs)
    pandas.DataFrame.to_csv = slow_to_csv

from unicure_rt.cli.app import main
sys.argv[0] = "unicure-rt"
main()
"""


@pytest.fixture(scope="module")
def long_run(tiny_bundle, tmp_path_factory):
    """A patient table and a 1,000-drug library: a scoring run of many seconds."""
    from unicure_rt.drugs.build import import_library

    folder = tmp_path_factory.mktemp("interrupts")
    rng = np.random.default_rng(0)
    ids = [f"T{i}" for i in range(6)] + ["N"]
    counts = pd.DataFrame(rng.poisson(6, size=(len(LANDMARKS), 7)), index=LANDMARKS, columns=ids)
    counts.to_csv(folder / "patients.csv")
    embeddings = pd.DataFrame(
        rng.normal(size=(1000, 512)), index=[f"d{i:04d}" for i in range(1000)]
    )
    embeddings.index.name = "name"
    embeddings.to_parquet(folder / "emb.parquet")
    import_library(folder / "emb.parquet", encoder_id="unimol-512", out=folder / "drugs.parquet")
    return folder


def interrupted(long_run, tiny_bundle, tmp_path, stage: str, sig: int):
    parent = tmp_path / "results"
    parent.mkdir()
    marker = tmp_path / "marker"
    env = {**os.environ, "UNICURE_TEST_MARKER": str(marker), "UNICURE_TEST_STAGE": stage}
    args = [str(long_run / "patients.csv"), "--bundle", str(tiny_bundle), "--normal-where"]
    args += ["sample=N", "--out", str(parent / "out"), "--threads", "1"]
    if stage == "computing":  # a long run: 1,000 drugs x 6 doses x 6 profiles x 4 draws
        args += ["--drugs", str(long_run / "drugs.parquet"), "--draws", "4"]
    else:  # reach the writing stage quickly (the bundle's 50 drugs)
        args += ["--draws", "1", "--doses", "1"]
    child = subprocess.Popen(
        [sys.executable, "-c", PREAMBLE, "score", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                out, err = child.communicate(timeout=10)
                pytest.fail(f"the run never reached {stage} (exit {child.returncode}): {err}")
            time.sleep(0.05)
        time.sleep(0.3)
        assert child.poll() is None, "the run ended before it could be interrupted"
        child.send_signal(sig)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, out + err, parent


@pytest.mark.parametrize("stage", ["computing", "writing"])
def test_ctrl_c_leaves_no_output(long_run, tiny_bundle, tmp_path, stage):
    code, output, parent = interrupted(long_run, tiny_bundle, tmp_path, stage, signal.SIGINT)
    assert code == 130, output
    assert "Interrupted: no output was written." in output
    assert "Traceback" not in output, output
    assert list(parent.iterdir()) == [], list(parent.iterdir())


def test_sigterm_leaves_no_output(long_run, tiny_bundle, tmp_path):
    code, output, parent = interrupted(long_run, tiny_bundle, tmp_path, "writing", signal.SIGTERM)
    assert code == 143, output
    assert "Terminated: no output was written." in output
    assert "Traceback" not in output, output
    assert list(parent.iterdir()) == [], list(parent.iterdir())
