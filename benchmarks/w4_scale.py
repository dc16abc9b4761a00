"""W4: one patient against libraries of 10k, 100k and 1M compounds; throughput and peak RSS.

Libraries hold synthetic embeddings of the model's drug width (manifest `drug_dim`, 512 in the
published and the demo model) stored as float16, written in streaming chunks with the library
writer of `unicure_rt.drugs.library` (the one `import_library` uses). Each size is scored in a fresh
process by `score_patient` (the first tumour profile of the TCGA example, one draw, the six
reference doses, predictions of the top 10 kept), which reports its peak RSS. (Until the
layout of issue 20 the child also ran the pre-streaming runner, score.py of commit 4638830, whose
module can no longer be imported beside the moved ones; its rows are in git history.)

W4P (`run_published`): the same scoring of 1M compounds with the published-size FlexPert and
decoder (`models.w4p_bundles`, random weights in the published layout), its fp32 and its int8
bundle each in a fresh process; the load average is recorded around every child.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import models
import numpy as np
import pandas as pd
from common import BENCH, REPO, child_json, load_average, target

SIZES = (10_000, 100_000, 1_000_000)
SIZES_QUICK = (10_000, 100_000)
PUBLISHED_SIZE = 1_000_000
PUBLISHED_SIZE_QUICK = 10_000
CHUNK = 65_536


def write_library(path: Path, n: int, encoder_id: str, dim: int, seed: int = 0) -> Path:
    from unicure_rt.drugs.library import LibraryWriter, metadata_schema
    from unicure_rt.outputs import staged_output_file

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    with staged_output_file(path) as staged:
        writer = LibraryWriter(path, staged, metadata_schema(pd.DataFrame()), dim, "float16")
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
                writer.write(meta, rng.normal(size=(stop - start, dim)).astype(np.float32))
            writer.finish({"encoder_id": encoder_id, "source": "synthetic benchmark library"})
        except BaseException:
            writer.abort()
            raise
    return path


def child(bundle: Path, library_path: Path, top: int) -> dict:
    import resource

    from common import current_rss_mib

    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.drugs.library import load_library
    from unicure_rt.patients.load import PatientProfiles, load_patient
    from unicure_rt.scoring.options import ScoreOptions
    from unicure_rt.scoring.pipeline import score_patient

    t0 = time.perf_counter()
    loaded = load_bundle(bundle)
    library = load_library(
        library_path, encoder_id=loaded.drug_encoder["id"], dim=loaded.manifest["model"]["drug_dim"]
    )
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
        "precision": loaded.manifest["precision"],
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


def library_for(bundle: Path, work: Path, n: int) -> Path:
    """The synthetic `n`-compound library of `bundle`'s drug encoder id and width (cached)."""
    import hashlib

    from unicure_rt.bundle.load import load_bundle

    loaded = load_bundle(bundle)
    encoder_id = loaded.drug_encoder["id"]
    dim = loaded.manifest["model"]["drug_dim"]
    tag = hashlib.sha256(encoder_id.encode()).hexdigest()[:8]
    return write_library(work / f"w4_library_{n}_{tag}_d{dim}.parquet", n, encoder_id, dim)


def score_in_child(bundle: Path, library: Path) -> dict:
    """One `child` run in a fresh process, with the library size and the load around it."""
    load_before = load_average()
    found = child_json([str(BENCH / "w4_scale.py"), "--child", str(bundle), str(library), "10"])
    found["library_file_mib"] = library.stat().st_size / 2**20
    found["load_average_before"] = load_before
    found["load_average_after"] = load_average()
    return found


def run(args, work: Path) -> dict:
    bundle, label = models.default_bundle_or_small(work)
    sizes = SIZES_QUICK if args.quick else SIZES
    rows = []
    for n in sizes:
        path = library_for(bundle, work, n)
        print(f"[bench] W4: {n} drugs", flush=True)
        found = score_in_child(bundle, path)
        rows.append(found)
        print(
            f"[bench]   {found['predictions_per_s']:.0f} predictions/s, "
            f"peak RSS {found['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    biggest = rows[-1]
    smallest = rows[0]
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


def with_earlier_rows(rows: list[dict], earlier: dict | None) -> list[dict]:
    """`rows` plus the rows of the `earlier` run.py entry for (precision, size) pairs that `rows`
    lack, each marked with the date and command of the run that measured it; by size, then
    precision."""
    measured = {(row["precision"], row["n_drugs"]) for row in rows}
    kept = []
    for row in (earlier or {}).get("result", {}).get("rows", []):
        if (row["precision"], row["n_drugs"]) not in measured:
            run = {"date": earlier["date"], "command": earlier["command"]}
            kept.append({**row, "measured_in": row.get("measured_in", run)})
    return sorted(rows + kept, key=lambda row: (row["n_drugs"], row["precision"]))


def run_published(args, work: Path, earlier: dict | None = None) -> dict:
    """W4P: fp32 and int8 bundles (`args.w4p_precisions`) of the published-size FlexPert, each in
    a fresh process. Rows of the `earlier` run.py entry for other (precision, size) pairs are
    kept with the date and command that measured them: the full size may be measured in parts.
    """
    bundles = models.w4p_bundles(work)
    n = args.w4p_drugs or (PUBLISHED_SIZE_QUICK if args.quick else PUBLISHED_SIZE)
    precisions = [p.strip() for p in args.w4p_precisions.split(",") if p.strip()]
    unknown = sorted(set(precisions) - set(bundles))
    if unknown:
        raise ValueError(f"unknown W4P precision(s) {unknown}; choose from {', '.join(bundles)}")
    path = library_for(bundles["fp32"], work, n)
    rows = []
    for precision in precisions:
        print(f"[bench] W4P: {n} drugs, {precision}", flush=True)
        found = score_in_child(bundles[precision], path)
        rows.append(found)
        # the whole row in the log: kept even if the next precision never finishes
        print(f"[bench]   {json.dumps(found)}", flush=True)
    rows = with_earlier_rows(rows, earlier)
    targets = []
    for row in rows:
        name = f"W4P {row['precision']} at {row['n_drugs']:,} drugs"
        notes = [] if row["n_drugs"] == PUBLISHED_SIZE else [f"not {PUBLISHED_SIZE:,} drugs"]
        if "measured_in" in row:
            notes.append(f"measured {row['measured_in']['date']}")
        note = "; ".join(notes)
        targets += [
            target(
                f"{name}: peak RSS <= 2 GB",
                f"{row['peak_rss_mib']:.0f} MiB (after load {row['rss_after_load_mib']:.0f} MiB)",
                row["peak_rss_mib"] <= 2048,
                "<= 2 GB (W4's goal)",
                note,
            ),
            target(
                f"{name}: throughput",
                f"{row['predictions_per_s']:,.0f} predictions/s "
                f"({row['scoring_s']:.0f} s for {row['predictions']:,} predictions)",
                None,
                "report",
                note,
            ),
        ]
    return {
        "bundles": {k: str(v) for k, v in bundles.items()},
        "model": "published FlexPert+decoder sizes, random weights in the published layout "
        "(tests/published_fixtures.make_published_state_dict(full_flexpert=True)), tiny backbone "
        "over the 978 landmark genes, converted with unicure_rt.train.export.convert, exported "
        "with export_bundle at fp32 and at int8",
        "draws": 1,
        "rows": rows,
        "targets": targets,
    }


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        bundle_arg, library_arg, top_arg = sys.argv[2:5]
        sys.stdout.write(
            "\n" + json.dumps(child(Path(bundle_arg), Path(library_arg), int(top_arg))) + "\n"
        )
