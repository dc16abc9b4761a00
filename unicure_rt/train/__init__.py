"""Training of the bundled demo model (imports torch): `python -m unicure_rt.train demo`."""
