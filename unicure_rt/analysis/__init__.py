"""Analysis of rankings: patient strata, survival against them, and validation against data.

Reads score output folders, clinical tables and measured data sets; writes the strata and
validation output folders. Imports scoring and everything below it; never torch.
"""
