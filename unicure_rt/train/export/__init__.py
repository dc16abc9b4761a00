"""Training side: LoRA merge, ONNX export, parity gate, checkpoint conversion (imports torch)."""
