"""Seeded synthetic customers in the exact schema and quirks of the IBM Telco churn export.

No real customer data can ship with the project, so tests, `make run` and benchmarks use this
generator for the shipped contract (contracts/telco.yaml, whose columns it writes);
`generate_for_contract` writes data for any other contract. Churn depends on contract, tenure,
internet service, payment method, charges and support services with the signs and rough
strengths seen in the public data, plus unexplained noise, so a good model lands near 0.85
holdout AUC rather than a suspicious 0.99.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import Contract, default_contract, load_contract

TARGET_CHURN_RATE = 0.265
_ID_DIGITS = 10_000
_ID_LETTERS = 26**5
_ID_SPACE = _ID_DIGITS * _ID_LETTERS
_ID_MULTIPLIER = 73_430_942_007  # coprime with 10**4 * 26**5: i -> a*i + b is a bijection
_NOISE_SD = 0.55


def _choice(
    rng: np.random.Generator, levels: tuple[str, ...], p: list[float], n: int
) -> np.ndarray:
    return np.asarray(levels, dtype=object)[rng.choice(len(levels), size=n, p=p)]


def _customer_ids(first: int, n: int, offset: int) -> np.ndarray:
    """Unique IDs shaped like '7590-VHVEG' for rows `first` on, from a seeded bijection of the
    row index (`offset` is the seed's), so chunks of one table never share an ID.

    Built as bytes, a column of characters at a time (per-string operations took seconds per
    million rows), and multiplied in two halves so that no product leaves int64.
    """
    if first + n > _ID_SPACE:
        raise ValueError(f"rows={first + n} exceeds the {_ID_SPACE} distinct customer IDs")
    rows = np.arange(first, first + n, dtype=np.int64)
    high, low = np.divmod(rows, 1 << 20)
    shifted = (1 << 20) * _ID_MULTIPLIER % _ID_SPACE
    codes = (high * shifted % _ID_SPACE + low * _ID_MULTIPLIER + offset) % _ID_SPACE
    digits, letters = np.divmod(codes, _ID_LETTERS)
    chars = np.empty((n, 10), dtype=np.uint8)
    for column, power in enumerate((1000, 100, 10, 1)):
        chars[:, column] = digits // power % 10 + ord("0")
    chars[:, 4] = ord("-")
    for column, power in enumerate(range(4, -1, -1)):
        chars[:, 5 + column] = letters // 26**power % 26 + ord("A")
    return chars.view("S10").ravel().astype(str).astype(object)


def _solve_intercept(logit: np.ndarray, rate: float) -> float:
    """Intercept that makes the mean churn probability equal `rate` (bisection)."""
    low, high = -15.0, 15.0
    for _ in range(60):
        mid = (low + high) / 2
        if (1 / (1 + np.exp(-(logit + mid)))).mean() < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


#: As many customers as the public export has.
DEFAULT_ROWS = 7043


def generate_customers(rows: int, seed: int = 42) -> pd.DataFrame:
    """Return `rows` synthetic customers with raw-export types (TotalCharges as text)."""
    return next(generate_chunks(rows, seed, chunk_rows=max(rows, 1)))


def generate_chunks(rows: int, seed: int = 42, chunk_rows: int = 1 << 20) -> Iterator[pd.DataFrame]:
    """`rows` customers as consecutive chunks of `chunk_rows`, for tables that do not fit in
    memory (a hundred million customers go straight to a partitioned snapshot).

    The first chunk is `generate_customers(chunk_rows, seed)`; each later one draws from its
    own stream, seeded by (seed, chunk), and the IDs run on across chunks, unique throughout.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    offset: int | None = None
    for number, first in enumerate(range(0, rows, chunk_rows)):
        rng = np.random.default_rng(seed if number == 0 else [seed, number])
        chunk, offset = _customers(rng, first, min(chunk_rows, rows - first), offset)
        yield chunk


def _customers(
    rng: np.random.Generator, first: int, n: int, id_offset: int | None
) -> tuple[pd.DataFrame, int]:
    """Rows `first` to `first + n` and the ID offset (drawn here for the first chunk)."""
    levels = default_contract().listed_levels
    yes_no = levels["Partner"]

    contract = _choice(rng, levels["Contract"], [0.55, 0.21, 0.24], n)
    is_m2m = contract == "Month-to-month"
    is_two_year = contract == "Two year"
    # Long contracts go with long tenures; month-to-month customers are mostly recent.
    tenure_scale = np.where(is_m2m, 14.0, np.where(is_two_year, 55.0, 38.0))
    tenure = np.minimum(1 + rng.exponential(tenure_scale), 72).astype(np.int64)
    tenure[rng.random(n) < 0.0016] = 0  # brand-new customers: billed nothing yet

    senior = (rng.random(n) < 0.16).astype(np.int64)
    partner = np.where(rng.random(n) < 0.48, "Yes", "No").astype(object)
    dependents = np.where(rng.random(n) < np.where(partner == "Yes", 0.5, 0.1), "Yes", "No")
    gender = _choice(rng, levels["gender"], [0.5, 0.5], n)

    phone = _choice(rng, yes_no, [0.1, 0.9], n)
    multiple = np.where(rng.random(n) < 0.47, "Yes", "No").astype(object)
    multiple[phone == "No"] = levels["MultipleLines"][2]

    internet = _choice(rng, levels["InternetService"], [0.34, 0.44, 0.22], n)
    has_internet = internet != "No"
    addon_rates = {
        "OnlineSecurity": 0.37,
        "OnlineBackup": 0.44,
        "DeviceProtection": 0.44,
        "TechSupport": 0.37,
        "StreamingTV": 0.49,
        "StreamingMovies": 0.50,
    }
    addons: dict[str, np.ndarray] = {}
    for name, rate in addon_rates.items():
        # Long-tenure customers have collected more services over the years.
        p = np.clip(rate + (tenure - 32) * 0.006, 0.05, 0.95)
        values = np.where(rng.random(n) < p, "Yes", "No").astype(object)
        values[~has_internet] = levels["OnlineSecurity"][2]
        addons[name] = values

    paperless = np.where(rng.random(n) < np.where(has_internet, 0.67, 0.3), "Yes", "No")
    payment_p = np.where(is_m2m, 0.48, 0.15)
    electronic = rng.random(n) < payment_p
    other_payment = _choice(
        rng,
        ("Bank transfer (automatic)", "Credit card (automatic)", "Mailed check"),
        [0.35, 0.34, 0.31],
        n,
    )
    payment = np.where(electronic, "Electronic check", other_payment).astype(object)

    addon_yes = np.stack([addons[a] == "Yes" for a in addons])
    addon_prices = np.array([[5.0], [5.0], [5.0], [5.0], [10.0], [10.0]])
    monthly = (
        np.where(phone == "Yes", 20.0, 0.0)
        + np.where(multiple == "Yes", 5.0, 0.0)
        + np.select([internet == "DSL", internet == "Fiber optic"], [25.0, 50.0], 0.0)
        + (addon_yes * addon_prices).sum(axis=0)
        + rng.normal(0.0, 2.0, n)
    )
    monthly = np.round(np.clip(monthly, 18.25, 118.75), 2)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, n), 2)
    total = np.maximum(total, np.where(tenure > 0, monthly, 0.0))
    total_text = np.char.mod("%.2f", total).astype(object)
    total_text[tenure == 0] = " "  # the export's quirk: a single blank, not 0

    logit = (
        np.select([is_m2m, is_two_year], [1.3, -1.4], 0.0)
        - 0.9 * np.log1p(tenure)
        + np.select([internet == "Fiber optic", internet == "No"], [0.9, -0.8], 0.0)
        + np.where(electronic, 0.55, 0.0)
        + 0.012 * (monthly - 65.0)
        - 0.45 * (addons["OnlineSecurity"] == "Yes")
        - 0.45 * (addons["TechSupport"] == "Yes")
        - 0.15 * (addons["OnlineBackup"] == "Yes")
        + 0.3 * (paperless == "Yes")
        + 0.25 * senior
        - 0.2 * (dependents == "Yes")
        + rng.normal(0.0, _NOISE_SD, n)
    )
    probability = 1 / (1 + np.exp(-(logit + _solve_intercept(logit, TARGET_CHURN_RATE))))
    churn = np.where(rng.random(n) < probability, "Yes", "No")

    if id_offset is None:
        id_offset = int(rng.integers(0, _ID_SPACE))
    telco = default_contract()
    columns = {
        telco.id_column: _customer_ids(first, n, id_offset),
        "gender": gender,
        "SeniorCitizen": senior,
        "Partner": partner,
        "Dependents": dependents,
        "tenure": tenure,
        "PhoneService": phone,
        "MultipleLines": multiple,
        "InternetService": internet,
        **addons,
        "Contract": contract,
        "PaperlessBilling": paperless,
        "PaymentMethod": payment,
        "MonthlyCharges": monthly,
        "TotalCharges": total_text,
        telco.target_column: churn,
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(first, first + n))[
        list(telco.columns)
    ], id_offset


def generate_for_contract(contract: Contract, rows: int, seed: int = 42) -> pd.DataFrame:
    """An export for any contract, under the export's names, with a signal to learn.

    Each feature pushes the churn log-odds by a seeded weight (a category by level), so a model
    learns something; categories are written as the export's codes where `map` translates
    them, numbers with a blank rule are blank in 2% of rows, and `drop` columns are filled with
    values that leak the target (a model that read them would be suspiciously good).
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    if contract.id is not None:
        columns[contract.id] = np.char.add("C", np.char.zfill(np.arange(rows).astype(str), 7))
    logit = np.zeros(rows)
    for column, spec in contract.features.items():
        weight = rng.normal(0.0, 1.0)
        if spec.numeric:
            low = 0.0 if spec.min is None else spec.min
            high = low + 100 if spec.max is None else min(spec.max, low + 1000)
            values = rng.uniform(low, high, rows)
            values = np.floor(values) if spec.type == "integer" else values.round(2)
            logit += weight * (values - values.mean()) / (values.std() or 1.0)
            text = (
                values.astype(np.int64).astype(str)
                if spec.type == "integer"
                else values.astype(str)
            )
            if spec.blank is not None:
                text = np.where(rng.random(rows) < 0.02, " ", text)
            columns[column] = text
        else:
            levels = list(spec.levels or [f"{column} {i}" for i in range(4)])
            picked = rng.integers(0, len(levels), rows)
            logit += rng.normal(0.0, 1.0, len(levels))[picked]
            back = {level: code for code, level in (spec.map or {}).items()}
            columns[column] = np.asarray([back.get(level, level) for level in levels])[picked]
    logit += rng.normal(0.0, _NOISE_SD, rows)
    probability = 1 / (1 + np.exp(-(logit + _solve_intercept(logit, TARGET_CHURN_RATE))))
    churned = rng.random(rows) < probability
    target = contract.target
    stayed = target.negative[0] if target.negative else f"not {target.positive[0]}"
    columns[contract.target_column] = np.where(churned, target.positive[0], stayed)
    for column in contract.drop:
        columns[column] = np.where(churned, "leaked-churn", "leaked-stay")
    frame = pd.DataFrame(columns)
    return frame.rename(columns=contract.export_names)


def write_customers(frames: pd.DataFrame | Iterable[pd.DataFrame], path: Path) -> Path:
    """Write like the real export: CRLF line endings, no index; chunks one after another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        for number, frame in enumerate([frames] if isinstance(frames, pd.DataFrame) else frames):
            frame.to_csv(handle, index=False, header=number == 0, lineterminator="\r\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="churn generate-data",
        description="Write synthetic Telco churn customers (IBM export schema) to a CSV file.",
    )
    add_arguments(parser)
    run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_ROWS,
        help=f"customers to write (default {DEFAULT_ROWS})",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--out", type=Path, default=Path("data/telco_churn.csv"), help="CSV file to write"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite --out if it exists (refused otherwise)"
    )
    parser.add_argument(
        "--contract",
        type=Path,
        help="write an export for this data contract instead of the shipped telco one",
    )


def run(args: argparse.Namespace) -> None:
    out: Path = args.out
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists; not overwriting it (pass --force to replace it)")
    contract = getattr(args, "contract", None)
    frames = (
        [generate_for_contract(load_contract(contract), args.rows, args.seed)]
        if contract
        else generate_chunks(args.rows, args.seed)
    )
    write_customers(frames, out)
    print(f"wrote {args.rows} customers to {out}")


if __name__ == "__main__":
    main()
