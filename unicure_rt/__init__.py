"""unicure-rt: offline inference toolkit for the UniCure drug-response model."""

__version__ = "0.1.0"
