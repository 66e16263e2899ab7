"""Evaluation: metrics, calibration, reports. Numpy, scikit-learn and matplotlib only."""
