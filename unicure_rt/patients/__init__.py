"""Patients: reading expression files into log2 profiles beside their normal reference (no torch).

Reads h5ad, CSV, TSV and Parquet files and the shipped gene table and normal-tissue references;
gives `PatientProfiles` (tumour profiles, normal reference, gene coverage, QC record). Writes
nothing. Imports nothing of unicure-rt but the shared modules at the top of the package.
"""
