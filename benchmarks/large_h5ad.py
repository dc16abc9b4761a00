"""Issue 9 resources: `score` on a 100,000-cell h5ad (over 1 GiB, so read in backed mode).

Builds a synthetic single-cell count matrix (landmark genes plus other genes of the packaged
gene table, 10 patients, a fifth of the cells labelled normal), runs `unicure-rt score` on it
under /usr/bin/time -v and reports wall time and peak RSS next to the file size, in
benchmarks/sections/large_h5ad.md, which benchmarks/RESULTS.md includes (re-rendered here).

Usage: python benchmarks/large_h5ad.py [--cells 100000] [--work /tmp/unicure-rt-bench]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from report import write_section
from scipy import sparse

from unicure_rt.patients.genes import gene_table
from unicure_rt.train.export.pipeline import default_output_genes


def build(path: Path, n_cells: int, n_genes: int, per_cell: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    landmarks = default_output_genes()
    others = [g for g in gene_table()["symbol"] if g not in set(landmarks)]
    genes = landmarks + others[: n_genes - len(landmarks)]
    chunks = []
    for start in range(0, n_cells, 10_000):
        rows = min(10_000, n_cells - start)
        cols = np.sort(rng.random((rows, n_genes)).argsort(axis=1)[:, :per_cell], axis=1)
        data = rng.integers(1, 30, size=(rows, per_cell)).astype(np.float32)
        indptr = np.arange(0, rows * per_cell + 1, per_cell)
        chunks.append(
            sparse.csr_matrix((data.ravel(), cols.ravel(), indptr), shape=(rows, n_genes))
        )
    obs = pd.DataFrame(
        {
            "sample": [f"patient{i % 10}" for i in range(n_cells)],
            "condition": np.where(rng.random(n_cells) < 0.2, "normal", "tumour"),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    adata = anndata.AnnData(X=sparse.vstack(chunks).tocsr(), obs=obs, var=pd.DataFrame(index=genes))
    adata.write_h5ad(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--per-cell", type=int, default=1500, help="non-zero genes per cell")
    parser.add_argument("--work", type=Path, default=Path("/tmp/unicure-rt-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"cells_{args.cells}.h5ad"
    t0 = time.perf_counter()
    if not path.exists():
        build(path, args.cells, args.genes, args.per_cell)
    build_s = time.perf_counter() - t0
    out = args.work / "large_h5ad_out"
    shutil.rmtree(out, ignore_errors=True)
    exe = shutil.which("unicure-rt") or str(Path(sys.executable).parent / "unicure-rt")
    command = [
        exe,
        "score",
        str(path),
        "--sample-key",
        "sample",
        "--normal-where",
        "condition=normal",
        "--draws",
        "1",
        "--doses",
        "1,10",
        "-q",
        "--out",
        str(out),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    run = json.loads((out / "run.json").read_text())
    size_gib = path.stat().st_size / 2**30
    lines = [
        "## Large h5ad (issue 9: bounded memory on a 100,000-cell file)",
        "",
        f"Run {time.strftime('%Y-%m-%dT%H:%M:%S')}, "
        f"`python benchmarks/large_h5ad.py --cells {args.cells}` on "
        f"{platform.processor() or platform.machine()}, 2 cores. Synthetic counts: "
        f"{args.cells:,} cells x {args.genes:,} genes ({args.per_cell:,} non-zero per cell), "
        "10 patients, ~20% normal cells; "
        f"file {size_gib:.2f} GiB (over the 1 GiB threshold, so read with `backed='r'` in row "
        f"blocks); built in {build_s:.0f} s.",
        "",
        "| command | wall s | peak RSS MiB | profiles | file GiB |",
        "| --- | --- | --- | --- | --- |",
        f"| `score --sample-key sample --normal-where condition=normal --draws 1 --doses 1,10` | "
        f"{wall:.1f} | {peak_kib / 1024:.0f} | {len(run['profiles'])} | {size_gib:.2f} |",
        "",
    ]
    write_section("large_h5ad", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
