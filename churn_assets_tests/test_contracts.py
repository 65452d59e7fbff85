"""Bring your own export: contracts validated and drafted, and driving the real graph."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from churn_assets.ml.data import synthetic, validation
from churn_assets.ml.data.contract import (
    HISTORY_COLUMNS,
    ROW_ID,
    ContractError,
    default_contract,
    load_contract,
    parse_contract,
)
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets.ml.data.synthetic import (
    generate_customers,
    generate_for_contract,
    write_customers,
)
from churn_assets.ml.model.features import model_inputs
from churn_assets.ml.registry import artifacts, signing
from churn_assets.ml.registry.model_registry import CONTRACT_TAG
from churn_assets.ml.stores import snapshot_store
from churn_assets_tests.conftest import (
    ChurnEnv,
    failure_messages,
    materialize_graph,
    verified_pipeline,
)
from serving.app import create_app
from serving.settings import Settings

CONTRACTS = Path(__file__).parent / "contracts"
#: The console script `uv sync` installs, as a user runs it.
CHURN = str(Path(sys.executable).parent / "churn")
IBM = Path(__file__).parents[1] / "churn_assets" / "ml" / "data" / "contracts" / "ibm_telco_33.yaml"
BANK = CONTRACTS / "bank_no_id.yaml"
MINIMAL = "target: {column: Churn, positive: ['Yes']}\nfeatures: {x: {type: number}}\n"


@pytest.mark.parametrize(
    ("text", "mistake"),
    [
        ("- a list", "must be a mapping"),
        ("target: [", "is not valid YAML at line 2, column 1: check the indentation"),
        ("features: {x: {type: number}}", "target: missing: add `target: {column: Churn,"),
        (
            MINIMAL.replace("number", "text"),
            "features.x.type: 'text' is not a type: use integer, number or category",
        ),
        (MINIMAL.replace("{type: number}", "number"), "write the feature as {type: number}"),
        (
            MINIMAL.replace("{type: number}", "{type: number, levls: [a]}"),
            "features.x.levls: 'levls' is not a key of a feature (did you mean 'levels'?)",
        ),
        (
            MINIMAL.replace("{type: number}", "{type: number, min: abc}"),
            "features.x.min: 'abc' is not a number: write one, e.g. min: 0",
        ),
        (
            MINIMAL.replace("{type: number}", "{type: number, levels: [a]}"),
            "levels cannot be used with type number: remove it, or change the type",
        ),
        (
            MINIMAL.replace("{type: number}", "{type: number, min: 5, max: 1}"),
            "min 5 is above max 1: swap them",
        ),
        (
            MINIMAL.replace("{type: number}", "{type: category, levels: [a, b, a]}"),
            "levels lists ['a'] twice: list each level once",
        ),
        (
            MINIMAL.replace("['Yes']", "[Yes]"),
            "target.positive.0: True is read by YAML as true/false, not text: quote it as the "
            'export writes it, e.g. "Yes"',
        ),
        (
            MINIMAL.replace("['Yes']", "[]"),
            'target.positive: empty: list the code(s) that mean churned, e.g. positive: ["Yes"]',
        ),
        (MINIMAL + "segments: [x]\n", "segment 'x' is a number: give it bands (upper edges"),
        (
            MINIMAL + "segments: [y]\n",
            "segments names ['y'], which are not features: add them to features, or remove",
        ),
        (MINIMAL + "drop: [x]\n", "drop lists ['x'], which the contract reads: remove them"),
        (
            MINIMAL + "colour: red\n",
            "colour: 'colour' is not a key of the contract: use version, id, target, rename",
        ),
        (MINIMAL.replace("{type: number}", "{type: number, blank: 'x * y'}"), "uses 'x'"),
        (MINIMAL.replace("{type: number}", "{type: number, blank: '__import__(1)'}"), "only"),
        (
            MINIMAL.replace("features: {x:", "features: {'Tenure Months':"),
            "1 name(s) ('Tenure Months') are not plain identifiers",
        ),
        (MINIMAL.replace("features: {x:", "features: {first_seen:"), "reserved"),
        (MINIMAL + "id: Churn\n", "'Churn' is both the id and the target: "),
        (MINIMAL + "id: x\n", "'x' is both the id and a feature: "),
        (
            MINIMAL.replace("{x: {type: number}}", "\n  x: {type: number}\n  x: {type: integer}"),
            "repeats the key 'x' at line 4 (first at line 3); YAML would keep only the last, "
            "so keep one of them",
        ),
    ],
)
def test_each_mistake_in_a_contract_is_named_by_its_key_with_its_fix(
    text: str, mistake: str
) -> None:
    with pytest.raises(ContractError) as error:
        parse_contract(text, "mine.yaml")
    assert "contract mine.yaml" in str(error.value)
    assert mistake in str(error.value)


def test_export_names_in_a_contract_are_one_mistake_with_the_rename_block_to_paste() -> None:
    text = (
        "id: Customer ID\n"
        "target: {column: Churn Label, positive: ['Yes']}\n"
        "rename: {Senior Citizen: senior}\n"
        "features:\n"
        "  Tenure Months: {type: integer, min: 0}\n"
        "  senior: {type: category}\n"
        "  Monthly Charges: {type: number, min: 0}\n"
    )
    with pytest.raises(ContractError) as error:
        parse_contract(text, "mine.yaml")
    header, sentence, *block = str(error.value).splitlines()
    assert header == "contract mine.yaml has 1 mistake(s):"  # not one regex error per name
    assert sentence.startswith(
        "  4 name(s) ('Customer ID', 'Churn Label', 'Tenure Months', 'Monthly Charges') are "
        "not plain identifiers"
    )
    assert sentence.endswith("use the new names in id, target and features:")
    rename = yaml.safe_load("\n".join(line.removeprefix("      ") for line in block))["rename"]
    assert rename == {
        "Senior Citizen": "senior",  # the contract's own, kept
        "Customer ID": "Customer_ID",
        "Churn Label": "Churn_Label",
        "Tenure Months": "Tenure_Months",
        "Monthly Charges": "Monthly_Charges",
    }
    # pasting the block and using its names where the contract had the export's fixes it
    document = yaml.safe_load(text)
    document["rename"] = rename
    document["id"] = rename[document["id"]]
    document["target"]["column"] = rename[document["target"]["column"]]
    document["features"] = {rename.get(k, k): v for k, v in document["features"].items()}
    fixed = yaml.safe_dump(document, sort_keys=False)
    contract = parse_contract(fixed, "fixed.yaml")
    assert contract.id == "Customer_ID" and contract.target_column == "Churn_Label"


def test_the_shipped_contract_describes_the_telco_export_exactly() -> None:
    telco = default_contract()
    assert tuple(generate_customers(10).columns) == telco.columns
    assert telco.export_names == {c: c for c in telco.columns}  # nothing renamed
    assert telco.band_labels("tenure")[0] == "0-12 months"
    assert load_contract(None) is telco
    assert parse_contract(telco.to_yaml(), "round trip").digest == telco.digest


def _ibm_export(folder: Path, rows: int = 2000) -> Path:
    """The IBM-style export: the contract's columns, its leakage columns and one undeclared."""
    frame = generate_for_contract(load_contract(IBM), rows, seed=3)
    frame.insert(1, "City", "Los Angeles")
    return write_customers(frame, folder / "ibm.csv")


def test_dropped_and_undeclared_columns_are_never_read(tmp_path: Path) -> None:
    contract = load_contract(IBM)
    raw = read_customer_csv(_ibm_export(tmp_path, 200), "x", contract)
    assert tuple(raw.columns) == contract.columns  # the contract's names, in its order
    assert not {"Churn Score", "Churn Reason", "Churn Value", "City"} & set(raw.columns)
    assert raw.attrs["extra_columns"] == ["City"]  # reported; the dropped ones are by choice


def test_a_bad_value_under_an_own_contract_names_its_rule_column_and_line(
    tmp_path: Path,
) -> None:
    contract = load_contract(BANK)
    frame = generate_for_contract(contract, 300, seed=5)
    frame.loc[7, "Gender"] = "X"  # not a code the contract maps, not a level
    raw = read_customer_csv(write_customers(frame, tmp_path / "bank.csv"), "x", contract)
    failed = [r for r in validation.validate(raw, contract) if not r.passed]
    assert [r.rule.name for r in failed] == ["category_levels"]
    assert failed[0].violations[0].message() == (
        "column 'Gender': 1 row(s) have a level outside ['Female', 'Male'], e.g. 'X' at line 9"
    )


def test_contract_infer_drafts_what_a_user_edits(tmp_path: Path) -> None:
    export = _ibm_export(tmp_path)
    draft = tmp_path / "draft.yaml"
    done = subprocess.run(
        [
            CHURN,
            "contract",
            "infer",
            str(export),
            "--out",
            str(draft),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and draft.is_file(), (done.stdout, done.stderr)
    contract = load_contract(draft)
    assert contract.id == "CustomerID"
    assert contract.target.column == "Churn_Label" and contract.target.positive == ("Yes",)
    assert contract.rename["Tenure Months"] == "Tenure_Months"
    assert set(contract.drop) >= {"Churn Score", "Churn Reason", "Churn Value"}
    assert contract.features["Tenure_Months"].type == "integer"
    assert contract.features["Contract"].levels == ("Month-to-month", "One year", "Two year")
    assert "Total_Charges" in contract.numeric_features
    # the draft reads and validates its own export
    raw = read_customer_csv(export, "x", contract)
    assert all(r.passed for r in validation.validate(raw, contract))
    assert "City" in contract.drop  # "Los Angeles" in every row
    checked = subprocess.run(
        [CHURN, "contract", "check", str(draft), "--data", str(export)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and "target: Churn_Label" in checked.stdout
    assert "passed: a run's data checks would pass this file" in checked.stdout


def _train_on(
    env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, contract: Path
) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("CHURN_CONTRACT_PATH", str(contract))
    result = materialize_graph(env, instance)
    assert result.success, failure_messages(result)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    return result


def _production(env: ChurnEnv) -> tuple[str, str]:
    version = env.client.get_model_version_by_alias(env.settings.model_name, "production")
    return str(version.version), str(version.run_id)


def test_an_own_export_with_a_renamed_id_trains_and_promotes(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = load_contract(IBM)
    _ibm_export(churn_env.data_path.parent).replace(churn_env.data_path)
    _train_on(churn_env, instance, monkeypatch, IBM)

    version, _ = _production(churn_env)
    tags = churn_env.client.get_model_version(churn_env.settings.model_name, version).tags
    assert tags[CONTRACT_TAG] == contract.digest
    settings = churn_env.settings
    registered = churn_env.client.get_model_version(settings.model_name, version)
    logged = artifacts.verified_contract(
        signing.verifier(settings), registered, settings.tracking_uri
    )
    assert logged.digest == contract.digest  # the version carries it, signed
    pipeline = verified_pipeline(churn_env.state_dir, version)
    assert model_inputs(pipeline) == list(contract.feature_columns)

    store = snapshot_store(churn_env.settings)
    current = store.current()
    assert current is not None
    snapshot = store.read(current.id)
    assert tuple(snapshot.columns) == (*contract.columns, *HISTORY_COLUMNS)
    scores = pd.read_parquet(churn_env.state_dir / "scores" / "churn_scores.parquet")
    assert {"customer_id", "Contract", "tenure_band", "monthly_charges"} <= set(scores.columns)
    assert set(scores["tenure_band"].astype(str)) <= set(contract.band_labels("tenure"))
    assert scores["customer_id"].str.startswith("C").all()


def test_an_own_export_without_an_id_trains_on_row_hashes(
    churn_env: ChurnEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = load_contract(BANK)
    frame = generate_for_contract(contract, 2000, seed=1)
    frame.loc[frame.index[::10], "Balance"] = ""  # blank: kept missing, as the contract says
    write_customers(frame, churn_env.data_path)
    result = _train_on(churn_env, instance, monkeypatch, BANK)

    store = snapshot_store(churn_env.settings)
    current = store.current()
    assert current is not None
    snapshot = store.read(current.id)
    assert snapshot[ROW_ID].is_unique and "Surname" not in snapshot.columns
    scores = pd.read_parquet(churn_env.state_dir / "scores" / "churn_scores.parquet")
    assert {ROW_ID, "Geography", "Age_band"} <= set(scores.columns)
    assert set(scores["Geography"]) == {f"Geography {i}" for i in range(4)}  # learned levels
    preprocessor = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path == ["preprocessor"]
    ]
    metadata = preprocessor[0].materialization.metadata
    assert metadata["numeric_features"].value == 4 and metadata["categorical_features"].value == 3
    # the same file under the shipped contract is refused by name, not trained on
    monkeypatch.delenv("CHURN_CONTRACT_PATH")
    refused = materialize_graph(churn_env, instance)
    assert not refused.success
    assert "missing required column(s) 'customerID'" in failure_messages(refused)
    assert _production(churn_env)[0] == "1"

    # the API serves the version with its own contract: its fields, documented in OpenAPI
    body = generate_for_contract(contract, 3, seed=9).drop(columns=["Exited", "Surname"])
    customers = [
        {
            k: (float(v) if k == "Balance" else int(v)) if k in contract.numeric_features else v
            for k, v in row.items()
        }
        for row in body.replace({"Gender": {"M": "Male", "F": "Female"}}).to_dict("records")
    ]
    with TestClient(
        create_app(Settings(state_dir=churn_env.state_dir, refresh_interval_s=60))
    ) as api:
        spec = api.get("/openapi.json").json()["components"]["schemas"]["Customer"]
        assert set(spec["properties"]) == set(contract.feature_columns)
        scored = api.post("/predict/batch", json={"customers": customers})
        assert scored.status_code == 200, scored.text
        assert [p["customerID"] for p in scored.json()["predictions"]] == [None] * 3
        telco = api.post("/predict", json={"tenure": 3, "Contract": "One year"})
        assert telco.status_code == 422 and "CreditScore" in telco.text

    # a contract without a field the API's callers send is promoted only with a version bump
    narrower = churn_env.root / "narrower.yaml"
    narrower.write_text(
        BANK.read_text().replace('  IsActiveMember: {type: category, levels: ["0", "1"]}\n', "")
    )
    monkeypatch.setenv("CHURN_CONTRACT_PATH", str(narrower))
    blocked = materialize_graph(churn_env, instance)
    assert not blocked.success
    assert (
        "would break the API's callers of production version 1: feature 'IsActiveMember' is gone"
        in (failure_messages(blocked))
    )
    assert _production(churn_env)[0] == "1"
    narrower.write_text(narrower.read_text().replace("version: 1", "version: 2"))
    bumped = materialize_graph(churn_env, instance)
    assert bumped.success, failure_messages(bumped)
    assert _production(churn_env)[0] == "3"  # version 2 was the refused one


def test_generate_data_writes_an_export_for_a_contract(tmp_path: Path) -> None:
    out = tmp_path / "bank.csv"
    synthetic.main(["--rows", "50", "--out", str(out), "--contract", str(BANK)])
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == [*load_contract(BANK).feature_columns, "Exited", "Surname"]
    assert set(written["Gender"]) <= {"M", "F"}  # the export's codes, which the contract maps
