"""Where model versions logged before `ml/` was grouped by concern find their calibrated model.

skops records each object's class by its module path: versions logged then name
`churn_assets.ml.calibration.CalibratedChurnClassifier`, and the API serving one, or a
rollback to one, must still load it. New versions record `churn_assets.ml.model.calibration`.
"""

from churn_assets.ml.model.calibration import CalibratedChurnClassifier

__all__ = ["CalibratedChurnClassifier"]
