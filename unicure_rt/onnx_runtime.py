"""ONNX Runtime as unicure-rt imports it: with its telemetry events turned off.

`unicure_rt/__init__.py` sets ORT_DISABLE_TELEMETRY before anything imports onnxruntime; this
also turns the events off through the API. The modules that open sessions for running
(`runtime.sessions`) or only to read a graph's signature (`bundle.contract`) import `ort` from
here, so the bundle's checks do not depend on the runtime package above it.
"""

import onnxruntime as ort

ort.disable_telemetry_events()  # with ORT_DISABLE_TELEMETRY (set in unicure_rt/__init__.py)

__all__ = ["ort"]
