"""Scoring: predicted responses turned into drug rankings, the `score` and `predict` pipelines.

Reads profiles, a bundle and a drug library; writes the score output folder (rankings,
predictions, drug pairs, run.json, report.html). Imports runtime, drugs, patients, bundle and
the shared modules; never torch.
"""
