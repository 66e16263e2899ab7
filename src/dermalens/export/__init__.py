"""Export: a training run -> a model bundle (ONNX + card), calibrated on validation."""
