"""The customer-keyed split: stable as customers are added, so comparisons stay honest."""

import pandas as pd
import pytest

from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.splitting import in_holdout, split_customers
from churn_assets.ml.data.synthetic import generate_customers

TELCO = default_contract()


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return clean_customers(generate_customers(6000, 11).astype(str), TELCO)[0]


def _ids(frame: pd.DataFrame) -> set[str]:
    return set(frame["customerID"])


def test_holdout_holds_the_configured_share_with_both_classes(customers: pd.DataFrame) -> None:
    splits = split_customers(customers, TELCO, 0.2, 42)
    assert len(splits.train) + len(splits.holdout) == len(customers)
    assert not _ids(splits.train) & _ids(splits.holdout)
    assert len(splits.holdout) / len(customers) == pytest.approx(0.2, abs=0.02)
    assert splits.holdout["Churn"].mean() == pytest.approx(customers["Churn"].mean(), abs=0.03)


def test_a_customer_keeps_its_side_when_new_customers_arrive(customers: pd.DataFrame) -> None:
    before = split_customers(customers.iloc[:3000], TELCO, 0.2, 42)
    after = split_customers(customers, TELCO, 0.2, 42)
    assert _ids(before.holdout) <= _ids(after.holdout)
    assert _ids(before.train) <= _ids(after.train)
    # Row order does not matter either: membership belongs to the customer.
    shuffled = split_customers(customers.sample(frac=1, random_state=3), TELCO, 0.2, 42)
    assert _ids(shuffled.holdout) == _ids(after.holdout)


def test_the_seed_and_fraction_choose_the_holdout(customers: pd.DataFrame) -> None:
    ids = customers["customerID"]
    assert (in_holdout(ids, 0.2, 42) != in_holdout(ids, 0.2, 43)).any()
    smaller, larger = in_holdout(ids, 0.1, 42), in_holdout(ids, 0.3, 42)
    assert (smaller <= larger).all()  # a larger holdout only adds customers


def test_a_side_without_both_classes_is_refused_by_name(customers: pd.DataFrame) -> None:
    few = pd.concat(
        [customers[customers["Churn"] == 1].head(3), customers[customers["Churn"] == 0]]
    )
    with pytest.raises(ValueError, match="holds only one Churn class"):
        split_customers(few.head(20), TELCO, 0.05, 42)
    with pytest.raises(ValueError, match=r"holdout_fraction must be between 0 and 1, got 1\.5"):
        split_customers(customers, TELCO, 1.5, 42)
