"""When a model is calibrated: its own module because settings name it, and settings must
load without LightGBM, scikit-learn and SciPy (about 4 s of imports on a 2-core machine that
every `churn` command and the serving settings would pay)."""

from enum import StrEnum


class CalibrationMode(StrEnum):
    """Lower-case names: Dagster's run config spells an enum by its member names."""

    auto = "auto"  # calibrate when the raw probabilities are off (see `calibrate`)
    always = "always"
    never = "never"
