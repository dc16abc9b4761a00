"""Rank drugs for a patient through Triton Inference Server.

The code lives in `unicure_rt/engines/triton_client.py`; `unicure-rt export-triton` copies it
into every model repository it writes as `client_example.py`. With the bundled model:

    unicure-rt export-triton --out models/     # then: tritonserver --model-repository=models/
    python examples/triton_client.py examples/tcga_brca.h5ad --normal-where condition=normal \\
        --manifest models/manifest.json --drugs unicure_rt/data/default_bundle/drugs.parquet \\
        --url localhost:8000

Needs `pip install 'unicure-rt[triton]'`.
"""

from unicure_rt.engines.triton_client import main

if __name__ == "__main__":
    main()
