"""Runtime: ONNX Runtime sessions and providers, cell sentences and cell embeddings (no torch).

Reads a bundle's graphs and patient profiles; writes nothing but TensorRT engine caches. Imports
the bundle, patients and drugs packages and the shared modules.
"""
