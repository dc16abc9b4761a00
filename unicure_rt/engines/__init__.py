"""Running unicure-rt beyond one process: cohorts of patient files and online serving.

- `cohort`: engine-neutral pieces of cohort scoring (finding the input files, reading one file
  into blocks of profiles, scoring a block with sessions that stay loaded, the run record);
- `ray_engine`: `score --engine ray`, the cohort on a Ray cluster (optional `[ray]` extra);
- `triton_client`: the Triton client example that `export-triton` copies into a model
  repository (`unicure_rt.engines.triton_repository` writes the repository).

Nothing here imports ray or tritonclient at module level.
"""
