"""W4: one patient against libraries of 10k, 100k and 1M compounds; throughput and peak RSS.

Libraries hold synthetic 512-d embeddings stored as float16, written in streaming chunks with
the library writer of `unicure_rt.drugs.library` (the one `import_library` uses). Each size is
scored in a fresh process by `score_patient` (the first tumour profile of the TCGA example, one
draw, the six reference doses, predictions of the top 10 kept), which reports its peak RSS.
Unless `--no-compare-old`, the same child also runs the pre-streaming `FlexPertRunner` (score.py of
commit `OLD_COMMIT`) on the sizes up to 100k.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import models
import numpy as np
import pandas as pd
from common import BENCH, REPO, child_json, target

SIZES = (10_000, 100_000, 1_000_000)
SIZES_QUICK = (10_000, 100_000)
CHUNK = 65_536
# the last version of score.py before the streaming FlexPertRunner (concatenated predictions)
OLD_COMMIT = "4638830"


def write_library(path: Path, n: int, encoder_id: str, seed: int = 0) -> Path:
    from unicure_rt.drugs.library import LibraryWriter, metadata_schema

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    writer = LibraryWriter(path, metadata_schema(pd.DataFrame()), 512, "float16")
    try:
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            ids = [f"C{i:07d}" for i in range(start, stop)]
            meta = pd.DataFrame(
                {
                    "drug_id": ids,
                    "name": [f"compound {i}" for i in range(start, stop)],
                    "smiles": pd.Series([None] * (stop - start), dtype=object),
                    "antineoplastic": pd.Series([None] * (stop - start), dtype=object),
                }
            )
            writer.write(meta, rng.normal(size=(stop - start, 512)).astype(np.float32))
        writer.finish(
            {"encoder_id": encoder_id, "source": "synthetic benchmark library"}, force=True
        )
    except BaseException:
        writer.abort()
        raise
    return path


def child(bundle: Path, library_path: Path, implementation: str, top: int) -> dict:
    import resource

    from common import current_rss_mib

    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.drugs.library import load_library
    from unicure_rt.patients.load import PatientProfiles, load_patient

    if implementation == "old":
        import importlib.util

        source = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:unicure_rt/score.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        old_path = Path(f"/tmp/unicure_bench_old_score_{id(source)}.py")
        old_path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_score", old_path)
        score = importlib.util.module_from_spec(spec)
        sys.modules["old_score"] = score
        spec.loader.exec_module(score)
        ScoreOptions, score_patient = score.ScoreOptions, score.score_patient
    else:
        from unicure_rt.scoring.options import ScoreOptions
        from unicure_rt.scoring.pipeline import score_patient

    t0 = time.perf_counter()
    loaded = load_bundle(bundle)
    library = load_library(library_path, encoder_id=loaded.drug_encoder["id"])
    patient = load_patient(REPO / "examples/tcga_brca.h5ad", normal_where="condition=normal")
    first = patient.tumour.index[:1]
    one = PatientProfiles(
        genes=patient.genes,
        tumour=patient.tumour.loc[first],
        normal=patient.normal.loc[first],
        obs=patient.obs.loc[first],
        qc=patient.qc,
    )
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mib()
    options = ScoreOptions(draws=1, prediction_top=top)
    t0 = time.perf_counter()
    result = score_patient(loaded, one, library=library, options=options)
    total = time.perf_counter() - t0
    timings = result.run["timings_s"]
    n_pred = len(library) * len(options.doses)
    return {
        "implementation": implementation,
        "n_drugs": len(library),
        "predictions": n_pred,
        "load_s": load_s,
        "score_patient_s": total,
        "scoring_s": timings["scoring_s"],
        "predictions_per_s": n_pred / timings["scoring_s"],
        "rss_after_load_mib": rss_loaded,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ranking_rows": len(result.ranking),
        "prediction_rows": 0 if result.predictions is None else len(result.predictions),
        "top_drug": str(result.ranking.iloc[0]["drug_id"]),
    }


def run(args, work: Path) -> dict:
    bundle, label = models.default_bundle_or_small(work)
    sizes = SIZES_QUICK if args.quick else SIZES
    import hashlib

    from unicure_rt.bundle.load import load_bundle

    encoder_id = load_bundle(bundle).drug_encoder["id"]
    tag = hashlib.sha256(encoder_id.encode()).hexdigest()[:8]
    rows = []
    for n in sizes:
        path = write_library(work / f"w4_library_{n}_{tag}.parquet", n, encoder_id)
        print(f"[bench] W4: {n} drugs", flush=True)
        found = child_json(
            [str(BENCH / "w4_scale.py"), "--child", str(bundle), str(path), "new", "10"]
        )
        found["library_file_mib"] = path.stat().st_size / 2**20
        rows.append(found)
        print(
            f"[bench]   {found['predictions_per_s']:.0f} predictions/s, "
            f"peak RSS {found['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        if args.compare_old and n <= 100_000:
            try:
                old = child_json(
                    [str(BENCH / "w4_scale.py"), "--child", str(bundle), str(path), "old", "10"]
                )
                old["library_file_mib"] = found["library_file_mib"]
                rows.append(old)
                print(f"[bench]   old runner: peak RSS {old['peak_rss_mib']:.0f} MiB", flush=True)
            except RuntimeError as exc:
                rows.append({"implementation": "old", "n_drugs": n, "error": str(exc)[-500:]})
    new = [r for r in rows if r["implementation"] == "new"]
    biggest = new[-1]
    smallest = new[0]
    growth = biggest["peak_rss_mib"] - smallest["peak_rss_mib"]
    result = {
        "bundle": models.relative(bundle),
        "bundle_label": label,
        "draws": 1,
        "rows": rows,
    }
    result["targets"] = [
        target(
            f"W4 peak RSS at {biggest['n_drugs']:,} drugs <= 2 GB",
            f"{biggest['peak_rss_mib']:.0f} MiB (10k: {smallest['peak_rss_mib']:.0f} MiB; "
            f"growth {growth:.0f} MiB)",
            biggest["peak_rss_mib"] <= 2048,
            "<= 2 GB, flat apart from the ranking table",
            label,
        ),
        target(
            f"W4 throughput at {biggest['n_drugs']:,} drugs",
            f"{biggest['predictions_per_s']:,.0f} predictions/s "
            f"({biggest['scoring_s']:.1f} s for {biggest['predictions']:,} predictions)",
            None,
            "report",
            label,
        ),
    ]
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        bundle_arg, library_arg, impl, top_arg = sys.argv[2:6]
        sys.stdout.write(
            "\n" + json.dumps(child(Path(bundle_arg), Path(library_arg), impl, int(top_arg))) + "\n"
        )
