"""`make schedule-on` and `make schedule-off`, run as a user runs them.

Apart from test_cli.py so the two long command-line tests can run on different workers.
"""

from pathlib import Path

import dagster as dg

from churn_assets_tests.processes import run_command


def _weekly_retrain(home: Path) -> str | None:
    """The schedule's state in the instance, where the daemon reads it."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = [s for s in instance.all_instigator_state() if s.name == "weekly_retrain"]
    return states[0].status.value if states else None


def test_make_schedule_on_and_off_toggle_the_weekly_retrain(shell_env: dict[str, str]) -> None:
    home = Path(shell_env["DAGSTER_HOME"])
    on = run_command(["make", "schedule-on"], shell_env)
    assert on.returncode == 0, on.stderr[-3000:]
    assert _weekly_retrain(home) == "RUNNING"
    off = run_command(["make", "schedule-off"], shell_env)
    assert off.returncode == 0, off.stderr[-3000:]
    assert _weekly_retrain(home) == "STOPPED"
