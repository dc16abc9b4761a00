"""`unicure-rt score --engine ray`: a cohort of patient files scored on Ray (optional `[ray]`).

Ray Data runs the work; nothing here schedules anything itself:

1. `from_items(files).flat_map(read)`: every file is read by `load_patient` (the same options
   for all) in a Ray task, checked for gene coverage and cut into blocks of profiles
   (`unicure_rt.engines.cohort`). The result is materialised first, so a bad file stops the
   run with its own message before any scoring, and nothing is written.
2. `map_batches(_ScoreBlocks, compute=ActorPoolStrategy(...), batch_size=1)`: a pool of actors,
   each holding the bundle, the drug library and one ONNX Runtime session per graph for its
   whole life (a GPU per actor when the cluster has GPUs and `--device` allows them). Each
   block is scored by `score_patient` with those sessions and its ranking is written to the
   Parquet dataset at once, so results stream to disk while other blocks are scored.
3. The driver collects the small per-block summaries and writes `run.json`.

The output folder is staged and renamed into place like the local path's: `ranking.parquet/`
(a Parquet **dataset directory**, one file per block, see `cohort`) and `run.json`. There is no
ranking.csv: a cohort's ranking has profiles x drugs rows.

On a multi-node cluster every node must see the input files, the bundle, the drug library and
the output folder at the same paths (a shared filesystem), and have unicure-rt installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.engines.cohort import (
    RANKING,
    BlockScorer,
    CohortInputs,
    CoverageSpec,
    block_size,
    block_summary,
    cohort_run_record,
    decode_block,
    find_inputs,
    ranking_table,
    read_input,
    write_part,
)
from unicure_rt.errors import UserError
from unicure_rt.outputs import clean_stale_partials, refuse_existing, staged_output_dir
from unicure_rt.patients.load import LoadOptions
from unicure_rt.patients.normals import normal_file
from unicure_rt.runtime.sessions import RuntimeOptions
from unicure_rt.scoring.options import ScoreOptions, resolve_library

MISSING_RAY = (
    "--engine ray needs Ray, an optional dependency that is not installed here: install it "
    "with `pip install '.[ray]'` in a unicure-rt clone (Ray Data 2.9 or newer) on this machine "
    "and on every node of the cluster, or score on this machine with --engine local."
)
SHOWN_ERRORS = 3


def import_ray() -> Any:
    """`ray` with Ray Data, or a UserError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(MISSING_RAY) from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None, *, quiet: bool) -> Iterator[dict[str, Any]]:
    """Connect to the cluster at `address`, or start a local one (all CPUs and GPUs of this
    machine); reuse a Ray already initialised in this process. Yields what run.json records
    about it; disconnects (and stops a local cluster it started) on the way out."""
    ray = import_ray()
    if ray.is_initialized():
        yield {"address": "already initialised in this process", "started_here": False}
        return
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=not quiet,
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"the Ray cluster at '{address}'" if address else "a local Ray cluster"
        raise UserError(
            f"Could not connect to {where} ({str(exc).strip().splitlines()[0][:300]}). Check "
            "the address (`ray status` on the head node prints it, e.g. 10.0.0.5:6379 or "
            "ray://head:10001) and that the cluster runs the same Ray and Python versions as "
            "this machine; leave --address out to start a local cluster."
        ) from None
    try:
        yield {"address": address or "local", "started_here": address is None}
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _ray_data_output(ray: Any, quiet: bool) -> Iterator[None]:
    """Ray Data logs every dataset's plan and, without a terminal, its progress at INFO: keep
    its warnings (errors only with `quiet`); progress bars stay on a terminal unless `quiet`."""
    logger = logging.getLogger("ray.data")
    context = ray.data.DataContext.get_current()
    level, bars = logger.level, context.enable_progress_bars
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    context.enable_progress_bars = bars and not quiet
    try:
        yield
    finally:
        logger.setLevel(level)
        context.enable_progress_bars = bars


def _read_rows(row: dict, *, load: LoadOptions, coverage: CoverageSpec, size: int) -> list[dict]:
    return read_input(int(row["input_index"]), row["path"], load, coverage, size)


class _ScoreBlocks:
    """Ray Data actor: a `BlockScorer` for its whole life; scores blocks and writes their
    ranking files, returns one summary row per block.

    A UserError (a device that cannot run on this worker, a profile the tokenizer refuses)
    comes back in the summary's `error` rather than as an exception: Ray Data would hand the
    driver its own exception type, without the message meant for the user.
    """

    def __init__(
        self,
        bundle: Path,
        bundle_sha256: str,
        drugs: Path | None,
        options: ScoreOptions,
        labels: list[str],
        out: str,
    ) -> None:
        self.scorer, self.error = None, ""
        try:
            self.scorer = BlockScorer(bundle, drugs, options, bundle_sha256)
        except UserError as exc:
            self.error = str(exc)
        self.labels, self.ranking_dir = labels, Path(out)

    def _score(self, index: int, number: int, data: bytes) -> dict:
        if self.scorer is None:
            return block_summary(index, number, None, error=self.error)
        started = time.perf_counter()
        try:
            result = self.scorer.score(decode_block(data))
        except UserError as exc:
            return block_summary(index, number, None, error=str(exc))
        table = ranking_table(result.ranking, index, self.labels[index])
        write_part(table, self.ranking_dir, index, number)
        return block_summary(index, number, result, len(table), time.perf_counter() - started)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = zip(batch["input_index"], batch["block"], batch["patient"], strict=True)
        return pd.DataFrame([self._score(int(i), int(n), data) for i, n, data in rows])


def _from_items(ray: Any, items: list[dict]) -> Any:
    """One dataset block per input file, so that files are read in parallel tasks."""
    try:
        return ray.data.from_items(items, override_num_blocks=len(items))
    except TypeError:  # Ray < 2.10
        return ray.data.from_items(items, parallelism=len(items))


def _file_errors(metas: list[dict], inputs: CohortInputs) -> None:
    bad = [(inputs.files[m["input_index"]], m["error"]) for m in metas if m["error"]]
    if not bad:
        return
    shown = " ".join(f"[{path}] {message}" for path, message in bad[:SHOWN_ERRORS])
    more = f" (and {len(bad) - SHOWN_ERRORS} more)" if len(bad) > SHOWN_ERRORS else ""
    raise UserError(
        f"{len(bad)} of {len(inputs.files)} input files cannot be scored{more}, so nothing was "
        f"scored or written: {shown} Fix or remove these files and run again."
    )


def _block_errors(summaries: list[dict], inputs: CohortInputs) -> None:
    failed = [s for s in summaries if s["error"]]
    if not failed:
        return
    messages = list(dict.fromkeys(s["error"] for s in failed))  # one per distinct message
    where = sorted({str(inputs.files[s["input_index"]]) for s in failed})
    raise UserError(
        f"{len(failed)} block(s) of profiles could not be scored (from {', '.join(where[:3])}"
        f"{', ...' if len(where) > 3 else ''}), so nothing was written: "
        f"{' '.join(messages[:SHOWN_ERRORS])}"
    )


def _workers(ray: Any, requested: int, device: str) -> tuple[int, int, float]:
    """(actors, actors that fit the cluster now, GPUs per actor): one actor per GPU when the
    cluster has GPUs and the device may use them, else one per CPU; `requested` (>0) sets the
    count (more than fit now: the pool starts with those that fit and grows as an autoscaling
    cluster adds nodes)."""
    resources = ray.cluster_resources()
    gpus = 0.0 if device == "cpu" else float(resources.get("GPU", 0))
    if device in ("cuda", "tensorrt") and gpus < 1:
        raise UserError(
            f"--device {device} was requested but the Ray cluster has no GPU. Use --device auto "
            "or --device cpu, or connect to a cluster with GPU nodes (--address)."
        )
    per_actor = 1.0 if gpus >= 1 else 0.0
    fit = max(1, int(gpus) if per_actor else int(resources.get("CPU", 1)))
    wanted = requested or fit
    return wanted, min(wanted, fit), per_actor


def score_cohort(
    paths: Sequence[Path],
    out: Path,
    *,
    bundle: Path | None,
    drugs: Path | None,
    load: LoadOptions,
    options: ScoreOptions,
    address: str | None = None,
    workers: int = 0,
    force: bool = False,
    quiet: bool = False,
    pin: BundlePin | None = None,
    record_paths: bool = False,
    on_start: Callable[[dict], None] = lambda info: None,
) -> dict:
    """Score every profile of every patient file in `paths` (files and folders) on Ray and
    write `out/ranking.parquet/` (Parquet dataset) and `out/run.json`; return the run record.

    `pin`: the manifest digest and/or signature the bundle must have. run.json and the ranking
    name files without their folders unless `record_paths` (see `provenance`); rows and
    profiles are joined to run.json's `inputs` by `input_index` (`cohort`). `on_start` gets
    the engine facts (workers, GPUs per worker, block size) once the cluster is up, before
    any work.
    """
    started = time.perf_counter()
    out = Path(out).resolve()
    protect = [*paths, normal_file(load.normal), drugs, bundle or DEFAULT_BUNDLE]
    refuse_existing(out, force, protect)
    ray = import_ray()
    loaded = load_bundle(bundle, pin)
    library = resolve_library(loaded, drugs)
    if normal_file(load.normal) is not None:
        load = replace(load, normal=normal_file(load.normal).resolve())
    inputs = find_inputs(paths, normal=normal_file(load.normal))
    size = block_size(len(library))
    timings: dict[str, float] = {}
    with ray_cluster(address, quiet=quiet) as cluster, _ray_data_output(ray, quiet):
        n_workers, n_fit, gpus = _workers(ray, workers, options.runtime.device)
        threads = options.runtime.threads or 1  # one CPU per actor: do not oversubscribe it
        worker_options = replace(
            options,
            runtime=RuntimeOptions(
                device=options.runtime.device,
                fp16=options.runtime.fp16,
                threads=threads,
                cache_dir=options.runtime.cache_dir,
            ),
        )
        engine = {
            "name": "ray",
            "ray": ray.__version__,
            **cluster,
            "workers": n_workers,
            "workers_at_start": n_fit,
            "worker_resources": {"num_cpus": 1, "num_gpus": gpus, "ort_threads": threads},
            "block_size": size,
            "cluster_resources": {
                k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")
            },
        }
        timings["ray_start_s"] = time.perf_counter() - started
        on_start(engine)

        t0 = time.perf_counter()
        items = [{"input_index": i, "path": str(p)} for i, p in enumerate(inputs.files)]
        coverage = CoverageSpec.from_bundle(loaded)
        parsed = (
            _from_items(ray, items)
            .flat_map(_read_rows, fn_kwargs={"load": load, "coverage": coverage, "size": size})
            .materialize()
        )
        heads = parsed.select_columns(["input_index", "block", "error", "meta"]).take_all()
        metas = sorted((h for h in heads if h["block"] == 0), key=lambda h: h["input_index"])
        _file_errors(metas, inputs)
        timings["reading_s"] = time.perf_counter() - t0

        with staged_output_dir(out, force=force, inputs=protect, kind="score-ray") as staging:
            t0 = time.perf_counter()
            scored = parsed.map_batches(
                _ScoreBlocks,
                fn_constructor_kwargs={
                    "bundle": loaded.path.resolve(),
                    "bundle_sha256": loaded.sha256,
                    "drugs": None if drugs is None else Path(drugs).resolve(),
                    "options": worker_options,
                    "labels": inputs.labels(record_paths=record_paths),
                    "out": str(staging / RANKING),
                },
                batch_size=1,
                batch_format="pandas",
                compute=ray.data.ActorPoolStrategy(min_size=n_fit, max_size=n_workers),
                num_cpus=1,
                num_gpus=gpus,
            )
            summaries = scored.take_all()
            _block_errors(summaries, inputs)
            clean_stale_partials(staging / RANKING)  # of workers killed while writing a block
            timings["scoring_s"] = time.perf_counter() - t0
            timings["total_s"] = time.perf_counter() - started
            run = cohort_run_record(
                bundle=loaded,
                library=library,
                options=options,
                inputs=inputs,
                metas=[json.loads(m["meta"]) for m in metas],
                summaries=summaries,
                normal=load.normal,
                engine=engine,
                timings=timings,
                record_paths=record_paths,
            )
            (staging / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    return run
