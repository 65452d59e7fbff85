"""The model: features, training, tuning, calibration, reasons, the baseline and batch scoring."""
