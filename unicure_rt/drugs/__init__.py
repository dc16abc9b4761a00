"""Drugs: dose encoding, fingerprints, the bundle's drug encoder and drug library files (no torch).

Reads drug tables (CSV, TSV, Parquet, Excel) and library files; writes library files. Imports
the bundle (for its drug encoder) and the shared modules, nothing else of unicure-rt.
"""
