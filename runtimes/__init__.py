"""One generate() on PyTorch, on ONNX Runtime + llama.cpp, and on llama.cpp-native multimodal."""
