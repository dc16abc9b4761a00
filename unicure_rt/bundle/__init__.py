"""The bundle: the folder of ONNX graphs and manifest where the two sides meet (no torch).

Reads and writes bundle folders: `load` (the `Bundle`, `load_bundle` with sha256 verification,
`write_manifest`), `schema` (the manifest's schema and token names), `contract` (the graphs'
declared inputs and outputs checked against the graphs), `pin` (expected digests and
signatures). Imports nothing of unicure-rt but the shared modules at the top of the package.
"""
