"""Export a merged impvlm checkpoint to ONNX (vision tower + projector) and GGUF (the Phi-2 LM)."""
