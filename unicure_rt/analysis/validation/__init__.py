"""`unicure-rt validate`: does a bundle's ranking agree with what was measured?

Three suites score a bundle (and, side by side, the model-free classic connectivity method, a
"mean response" and a "random" predictor) against measured data: drug sensitivity of cell lines
(GDSC2), measured L1000 consensus signatures, and known drug classes (ATC L01) in patients.
Modules: `names` (name normalisation, the tissue mapping), `data` (reading the data folder),
`model` (predicted effects and reversal scores of a bundle), `stats` (per-unit figures,
bootstrap intervals, permutation p-values), `sensitivity`, `signatures`, `classes` (the suites),
`run` (orchestration), `report` (validation.json, summary.md/.html, plots).
"""
