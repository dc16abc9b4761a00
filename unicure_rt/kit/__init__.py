"""Offline deployment kits: `build` makes one on a connected machine, `verify` checks one.

`verify` uses the standard library only: the kit carries a copy of it and runs it before
anything is installed. Imports the bundle and the shared modules; never torch.
"""
