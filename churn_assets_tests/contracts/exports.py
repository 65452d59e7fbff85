"""Small seeded exports shaped like the public churn files `churn contract infer` meets.

No real customer data ships with the project, so these copy what matters to drafting a
contract from each public file: its column names and order, its codes, its row counters and
IDs, its constant and many-level columns, its PII, and value ranges that a second file from
the same source exceeds a little. `python -m churn_assets_tests.contracts.exports DIR`
writes them all to DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from churn_assets.ml.data.synthetic import generate_customers, write_customers

#: The 50 states and DC, as the telecom export codes them.
STATES = (
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL",
    "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE",
    "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT",
    "VA", "VT", "WA", "WI", "WV", "WY",
)  # fmt: skip
#: Surnames built from parts: about as many distinct ones per row as the bank export has
#: (2,932 in 10,000 rows), so a name repeats, but rarely.
_SURNAME_HEADS = (
    "Har", "Mit", "Bart", "Hen", "Mac", "Dell", "Ger", "Lom", "Wat", "Lor", "Arm", "Cam",
    "Os", "Lav", "Bian", "Ty", "Mar", "Rob", "Tom", "Wright", "Cun", "Ok", "Ob", "Az", "Ni",
    "Chu", "Hsi", "Yen", "Kerr", "Sand",
)  # fmt: skip
_SURNAME_TAILS = (
    "grave", "chell", "lett", "derson", "lean", "ucci", "asimov", "bardo", "son", "enzo",
    "strong", "eron", "borne", "ine", "chi", "ler", "tin", "inson", "linson", "ingham",
)  # fmt: skip
_CITIES = (
    "Los Angeles", "San Diego", "San Jose", "San Francisco", "Fresno", "Sacramento",
    "Long Beach", "Oakland", "Bakersfield", "Anaheim", "Riverside", "Stockton", "Irvine",
    "Chula Vista", "Fremont", "Modesto", "Glendale", "Oxnard", "Eureka", "Redding",
)  # fmt: skip


def bank(rows: int = 2000, seed: int = 1) -> pd.DataFrame:
    """Like the bank churn export (Churn_Modelling.csv): a row counter before the real
    `CustomerId`, surnames, 0/1 flags, many zero balances, `Exited` 1/0."""
    rng = np.random.default_rng(seed)
    geography = rng.choice(["France", "Germany", "Spain"], rows, p=[0.5, 0.25, 0.25])
    age = np.clip(rng.normal(39, 10, rows), 18, 92).astype(int)
    balance = np.where(rng.random(rows) < 0.36, 0.0, rng.normal(120_000, 30_000, rows).round(2))
    products = rng.choice([1, 2, 3, 4], rows, p=[0.5, 0.46, 0.03, 0.01])
    active = (rng.random(rows) < 0.51).astype(int)
    logit = (
        -2.2
        + 0.06 * (age - 39)
        + 0.7 * (geography == "Germany")
        - 0.9 * active
        + 1.8 * (products >= 3)
        + rng.normal(0, 0.6, rows)
    )
    exited = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "RowNumber": np.arange(1, rows + 1),
            "CustomerId": rng.choice(np.arange(15_565_701, 15_815_691), rows, replace=False),
            "Surname": np.char.add(
                rng.choice(_SURNAME_HEADS, rows), rng.choice(_SURNAME_TAILS, rows)
            ),
            "CreditScore": np.clip(rng.normal(650, 97, rows), 350, 850).astype(int),
            "Geography": geography,
            "Gender": rng.choice(["Female", "Male"], rows, p=[0.45, 0.55]),
            "Age": age,
            "Tenure": rng.integers(0, 11, rows),
            "Balance": balance,
            "NumOfProducts": products,
            "HasCrCard": (rng.random(rows) < 0.7).astype(int),
            "IsActiveMember": active,
            "EstimatedSalary": rng.uniform(11.58, 199_992.48, rows).round(2),
            "Exited": exited,
        }
    )


def telecom(rows: int = 2666, seed: int = 2) -> pd.DataFrame:
    """Like the telecom churn export (the 80% file of churn-bigml, with SyriaTel's phone
    numbers): 51 states, area codes, yes/no plans, minutes and their charges, True/False."""
    rng = np.random.default_rng(seed)
    international = rng.random(rows) < 0.1
    voicemail = rng.random(rows) < 0.27
    calls = rng.poisson(1.56, rows)
    frame: dict[str, object] = {
        "State": rng.choice(STATES, rows),
        "Account length": np.clip(rng.normal(101, 40, rows), 1, None).astype(int),
        "Area code": rng.choice([408, 415, 510], rows, p=[0.25, 0.5, 0.25]),
        "phone number": [
            f"{a}-{b:04d}" for a, b in rng.integers([327, 0], [423, 10_000], (rows, 2))
        ],
        "International plan": np.where(international, "Yes", "No"),
        "Voice mail plan": np.where(voicemail, "Yes", "No"),
        "Number vmail messages": np.where(voicemail, np.clip(rng.normal(29, 7, rows), 4, None), 0)
        .round()
        .astype(int),
    }
    day_minutes = np.clip(rng.normal(180, 54, rows), 0, None).round(1)
    for period, mean, sd, price, calls_mean, calls_sd in (
        ("day", 180, 54, 0.17, 100, 20),
        ("eve", 200, 50, 0.085, 100, 20),
        ("night", 200, 50, 0.045, 100, 20),
        ("intl", 10, 2.8, 0.27, 4.5, 2.5),
    ):
        minutes = (
            day_minutes
            if period == "day"
            else np.clip(rng.normal(mean, sd, rows), 0, None).round(1)
        )
        frame[f"Total {period} minutes"] = minutes
        frame[f"Total {period} calls"] = (
            np.clip(rng.normal(calls_mean, calls_sd, rows), 0, None).round().astype(int)
        )
        frame[f"Total {period} charge"] = (minutes * price).round(2)
    frame["Customer service calls"] = calls
    logit = (
        -2.6
        + 2.0 * international
        + 1.6 * (calls >= 4)
        + 0.012 * (day_minutes - 180)
        - 0.6 * voicemail
    )
    frame["Churn"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "True", "False")
    return pd.DataFrame(frame)


def ibm_telco(rows: int = 2000, seed: int = 3) -> pd.DataFrame:
    """The IBM telco export (21 columns, `customerID`, blank TotalCharges), as the project's
    own generator writes it."""
    return generate_customers(rows, seed)


def ibm_telco_33(rows: int = 2000, seed: int = 4) -> pd.DataFrame:
    """IBM's 33-column release: constant Count/Country/State, many cities and locations, the
    target as Churn Label, and Churn Value, Churn Score and Churn Reason that give it away."""
    rng = np.random.default_rng(seed)
    classic = generate_customers(rows, seed)
    churned = classic["Churn"].to_numpy() == "Yes"
    cities = rng.choice(len(_CITIES), rows)
    latitude = (np.linspace(32.6, 41.9, len(_CITIES))[cities] + rng.normal(0, 0.2, rows)).round(6)
    longitude = (
        np.linspace(-124.2, -114.6, len(_CITIES))[cities] + rng.normal(0, 0.2, rows)
    ).round(6)
    reasons = [
        "Competitor offered more data",
        "Attitude of support person",
        "Moved",
        "Price too high",
    ]
    frame = pd.DataFrame(
        {
            "CustomerID": classic["customerID"],
            "Count": 1,
            "Country": "United States",
            "State": "California",
            "City": np.asarray(_CITIES)[cities],
            "Zip Code": 90001 + rng.integers(0, 6000, rows),
            "Lat Long": [f"{a:.6f}, {b:.6f}" for a, b in zip(latitude, longitude, strict=True)],
            "Latitude": latitude,
            "Longitude": longitude,
            "Gender": classic["gender"],
            "Senior Citizen": np.where(classic["SeniorCitizen"] == 1, "Yes", "No"),
            "Partner": classic["Partner"],
            "Dependents": classic["Dependents"],
            "Tenure Months": classic["tenure"],
        }
    )
    for column in ("PhoneService", "MultipleLines", "InternetService", "OnlineSecurity",
                   "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV",
                   "StreamingMovies", "Contract", "PaperlessBilling", "PaymentMethod"):  # fmt: skip
        spaced = "".join(f" {c}" if c.isupper() and i else c for i, c in enumerate(column))
        frame[spaced.replace("T V", "TV")] = classic[column]
    frame["Monthly Charges"] = classic["MonthlyCharges"]
    frame["Total Charges"] = classic["TotalCharges"]
    frame["Churn Label"] = classic["Churn"]
    frame["Churn Value"] = churned.astype(int)
    frame["Churn Score"] = np.where(churned, rng.integers(65, 101, rows), rng.integers(5, 81, rows))
    frame["CLTV"] = rng.integers(2003, 6501, rows)
    frame["Churn Reason"] = np.where(churned, rng.choice(reasons, rows), "")
    return frame


EXPORTS = {
    "bank.csv": bank,
    "telecom_80.csv": telecom,
    "ibm_telco.csv": ibm_telco,
    "ibm_telco_33.csv": ibm_telco_33,
}


def telecom_20() -> pd.DataFrame:
    """The telecom source's other file (churn-bigml-20: 667 customers), drawn the same way."""
    return telecom(667, seed=47)


def write_all(folder: Path) -> dict[str, Path]:
    written = {name: write_customers(build(), folder / name) for name, build in EXPORTS.items()}
    written["telecom_20.csv"] = write_customers(telecom_20(), folder / "telecom_20.csv")
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1])).values():
        print(path)
