"""`churn contract check CONTRACT --data FILE`: a run's data checks on a file, in seconds.

The check must find what `make run` finds a minute in (it runs the same reading and
validation code), say more of it (a few lines per problem, every problem at once), and exit
non-zero when there is anything to fix.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churn_assets.ml.data import validation
from churn_assets.ml.data.contract import load_contract, parse_contract
from churn_assets.ml.data.contract_check import check_data
from churn_assets.ml.data.contract_inference import infer_contract
from churn_assets.ml.data.reading import read_customer_csv
from churn_assets.ml.data.synthetic import write_customers
from churn_assets_tests.contracts import exports

CHURN = str(Path(sys.executable).parent / "churn")


@pytest.fixture
def bank_contract(tmp_path: Path) -> Path:
    export = write_customers(exports.bank(), tmp_path / "bank.csv")
    path = tmp_path / "bank.yaml"
    path.write_text(infer_contract(export))
    return path


def _broken_bank(folder: Path, rows: int = 600) -> Path:
    """The bank export with a column gone, unknown target codes, a new country, a negative
    age and an age that is not a number."""
    frame = exports.bank(rows, seed=8).astype(str).drop(columns=["Tenure"])
    frame.loc[[3, 10, 11, 40, 99], "Exited"] = "2"
    frame.loc[[5, 6, 7, 8, 9], "Geography"] = "Italy"
    frame.loc[12, "Age"] = "-4"
    frame.loc[13, "Age"] = "abc"
    return write_customers(frame, folder / "broken.csv")


def _check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHURN, "contract", "check", *map(str, args)], capture_output=True, text=True, check=False
    )


def test_check_with_data_reports_every_problem_with_its_first_lines(
    tmp_path: Path, bank_contract: Path
) -> None:
    done = _check(bank_contract, "--data", _broken_bank(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "id: CustomerId" in out  # the contract's summary comes first, as without --data
    assert "required_columns: the header (line 1) lacks 'Tenure'" in out
    # line = row + 2 (the header is line 1); three examples, then "..."
    assert (
        "target_codes: column 'Exited': 5 row(s) are not one of ['1', '0'] "
        "(line 5 '2', line 12 '2', line 13 '2', ...)"
    ) in out
    assert (
        "category_levels: column 'Geography': 5 row(s) have a level outside "
        "['France', 'Germany', 'Spain'] (line 7 'Italy', line 8 'Italy', line 9 'Italy', ...)"
    ) in out
    assert "value_ranges: column 'Age': 1 row(s) are below the minimum 0 (line 14 '-4')" in out
    assert "value_types: column 'Age': 1 row(s) are not numbers (line 15 'abc')" in out
    assert "5 problem(s): a run would stop at its data checks" in out


def test_check_finds_what_the_run_s_validation_finds(tmp_path: Path, bank_contract: Path) -> None:
    export = _broken_bank(tmp_path)
    contract = load_contract(bank_contract)
    report = check_data(export, contract)
    # the run's own rules, on the file read as a run reads it (without the missing column,
    # which a run refuses before judging the rest)
    frame = pd.read_csv(export, dtype=str, keep_default_na=False)
    frame["Tenure"] = "1"
    complete = write_customers(frame, tmp_path / "complete.csv")
    run = validation.validate(read_customer_csv(complete, None, contract), contract)
    expected = [
        (result.rule.name, v.column, v.problem, v.count, v.line)
        for result in run
        for v in result.violations
    ]
    found = [(f.rule, f.column, f.problem, f.count, f.examples[0][0]) for f in report.findings]
    assert found == expected and len(found) == 4
    assert report.missing == ["Tenure"]


def test_a_table_judged_in_chunks_gives_the_verdict_of_one_pass(
    tmp_path: Path, bank_contract: Path
) -> None:
    export = _broken_bank(tmp_path, rows=1000)
    contract = load_contract(bank_contract)
    whole = check_data(export, contract)
    chunked = check_data(export, contract, chunk_rows=7)  # examples across chunks
    assert chunked.findings == whole.findings and chunked.rows == whole.rows == 1000
    assert chunked.figures == whole.figures


def test_lines_are_the_file_s_own_past_a_quoted_newline(tmp_path: Path) -> None:
    contract = parse_contract(
        "id: id\ntarget: {column: churn, positive: ['yes']}\n"
        "features: {note: {type: category}, n: {type: integer, min: 0, max: 10}}\n",
        "mine.yaml",
    )
    rows = [f'c{i},"a\nb",{i % 12},{"no" if i % 3 else "yes"}' for i in range(40)]
    export = tmp_path / "quoted.csv"
    export.write_text("id,note,n,churn\n" + "\n".join(rows) + "\n")
    (finding,) = check_data(export, contract).findings
    # rows 11, 23 and 35 hold 11, and each row above them takes two lines
    assert finding.examples == ((24, "'11'"), (48, "'11'"), (72, "'11'"))


def test_a_file_a_run_cannot_read_fails_the_check_with_the_run_s_reason(
    tmp_path: Path, bank_contract: Path
) -> None:
    export = tmp_path / "latin1.csv"
    export.write_bytes("RowNumber,Surname\n1,Müller\n".encode("latin-1"))
    done = _check(bank_contract, "--data", export)
    assert done.returncode == 1
    assert "is not UTF-8: line 2" in done.stderr and "Traceback" not in done.stderr


def test_a_clean_file_passes_and_a_missing_target_is_all_that_is_said(
    tmp_path: Path, bank_contract: Path
) -> None:
    export = write_customers(exports.bank(300, seed=9), tmp_path / "next.csv")
    done = _check(bank_contract, "--data", export)
    assert done.returncode == 0, done.stdout
    assert "passed: a run's data checks would pass this file" in done.stdout
    frame = pd.read_csv(export, dtype=str).drop(columns=["Exited"])
    no_target = write_customers(frame, tmp_path / "scoring.csv")
    done = _check(bank_contract, "--data", no_target)
    assert done.returncode == 1 and "lacks 'Exited'" in done.stdout


def test_examples_far_apart_are_all_found(tmp_path: Path, bank_contract: Path) -> None:
    frame = exports.bank(3000, seed=10).astype(str)
    frame.loc[[10, 2500, 2990], "Geography"] = "Italy"  # thousands of rows apart
    report = check_data(write_customers(frame, tmp_path / "far.csv"), load_contract(bank_contract))
    (finding,) = report.findings
    assert [line for line, _ in finding.examples] == [12, 2502, 2992]
