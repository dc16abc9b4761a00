"""Training side (imports torch): model definitions, training, export, fine-tuning.

`models` (the PyTorch model), `export` (LoRA merge, ONNX export, parity gate, precision
variants, checkpoint conversion, the bundle writer), `finetune` (adaptor fine-tuning on paired
data) and the demo training run (`python -m unicure_rt.train demo`: `demo`, `data`, `losses`,
`evaluate`, `card`). The only package that imports torch; it writes bundles and uses the clinic
side below `analysis`, which never imports it.
"""
