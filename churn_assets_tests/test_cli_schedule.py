"""`make schedule-on` and `make schedule-off`, run as a user runs them.

Apart from test_cli.py so the two long command-line tests can run on different workers.
"""

from churn_assets_tests.processes import run_command, uv_executable


def test_make_schedule_on_and_off_toggle_the_weekly_retrain(shell_env: dict[str, str]) -> None:
    listing = [uv_executable(), "run", "--frozen", "dagster", "schedule", "list"]
    listing += ["-m", "churn_assets.definitions"]
    on = run_command(["make", "schedule-on"], shell_env)
    assert on.returncode == 0, on.stderr[-3000:]
    assert "weekly_retrain [RUNNING]" in run_command(listing, shell_env).stdout
    off = run_command(["make", "schedule-off"], shell_env)
    assert off.returncode == 0, off.stderr[-3000:]
    assert "weekly_retrain [STOPPED]" in run_command(listing, shell_env).stdout
