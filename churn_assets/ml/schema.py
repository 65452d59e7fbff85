"""The customer export's schema: the one place columns, levels and types are written down.

Training, cleaning, the synthetic generator and the API all read these constants, so a new
level or column is added here once and nowhere else.
"""

from __future__ import annotations

from typing import Final

ID_COLUMN: Final = "customerID"
TARGET_COLUMN: Final = "Churn"

YES_NO: Final = ("No", "Yes")
NO_PHONE_SERVICE: Final = "No phone service"
NO_INTERNET_SERVICE: Final = "No internet service"
INTERNET_ADDONS_LEVELS: Final = ("No", "Yes", NO_INTERNET_SERVICE)

#: Categorical feature -> allowed levels, in the order the encoder numbers them.
CATEGORICAL_LEVELS: Final[dict[str, tuple[str, ...]]] = {
    "gender": ("Female", "Male"),
    "Partner": YES_NO,
    "Dependents": YES_NO,
    "PhoneService": YES_NO,
    "MultipleLines": ("No", "Yes", NO_PHONE_SERVICE),
    "InternetService": ("DSL", "Fiber optic", "No"),
    "OnlineSecurity": INTERNET_ADDONS_LEVELS,
    "OnlineBackup": INTERNET_ADDONS_LEVELS,
    "DeviceProtection": INTERNET_ADDONS_LEVELS,
    "TechSupport": INTERNET_ADDONS_LEVELS,
    "StreamingTV": INTERNET_ADDONS_LEVELS,
    "StreamingMovies": INTERNET_ADDONS_LEVELS,
    "Contract": ("Month-to-month", "One year", "Two year"),
    "PaperlessBilling": YES_NO,
    "PaymentMethod": (
        "Bank transfer (automatic)",
        "Credit card (automatic)",
        "Electronic check",
        "Mailed check",
    ),
}

#: The add-ons only an internet customer can have ("No internet service" otherwise).
INTERNET_ADDONS: Final = tuple(
    column for column, levels in CATEGORICAL_LEVELS.items() if levels == INTERNET_ADDONS_LEVELS
)

#: Numeric feature -> (minimum, maximum) a plausible export stays within.
NUMERIC_RANGES: Final[dict[str, tuple[float, float]]] = {
    "SeniorCitizen": (0, 1),
    "tenure": (0, 120),
    "MonthlyCharges": (0.0, 1_000.0),
    "TotalCharges": (0.0, 120_000.0),
}
INTEGER_FEATURES: Final = ("SeniorCitizen", "tenure")

#: The 21 columns of the export, in the export's order.
RAW_COLUMNS: Final = (
    ID_COLUMN,
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "tenure",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
    TARGET_COLUMN,
)

#: Model inputs in export order: every column but the ID and the target.
FEATURE_COLUMNS: Final = tuple(c for c in RAW_COLUMNS if c not in (ID_COLUMN, TARGET_COLUMN))
CATEGORICAL_FEATURES: Final = tuple(c for c in FEATURE_COLUMNS if c in CATEGORICAL_LEVELS)
NUMERIC_FEATURES: Final = tuple(c for c in FEATURE_COLUMNS if c in NUMERIC_RANGES)

TARGET_LEVELS: Final = YES_NO

#: What a snapshot keeps of each customer's history besides the export's columns (ISO dates;
#: churn_date is empty while the customer is active). See churn_assets.ml.history.
FIRST_SEEN: Final = "first_seen"
CHURN_DATE: Final = "churn_date"
HISTORY_COLUMNS: Final = (FIRST_SEEN, CHURN_DATE)
