"""The PyTorch-free inference engine (numpy, Pillow, onnxruntime) behind predict, the API and the GUI."""
from .bundle import Bundle, BundleError, load_bundle
from .predictor import Prediction, Predictor

__all__ = ["Bundle", "BundleError", "load_bundle", "Prediction", "Predictor"]
