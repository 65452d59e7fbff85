"""The steps of a benchmarked run, as Dagster's event log records them."""

from __future__ import annotations

from pathlib import Path


def step_windows(home: Path) -> list[tuple[str, float, float]]:
    """Each step of the one run in the Dagster home `home`: its key, start and end (epoch
    seconds), in the order the steps ended; a failed step ends at its failure."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_run_records()
        starts: dict[str, float] = {}
        steps = []
        for record in instance.get_records_for_run(run.dagster_run.run_id).records:
            event = record.event_log_entry
            if event.dagster_event is None or event.step_key is None:
                continue
            kind = event.dagster_event.event_type
            if kind == dg.DagsterEventType.STEP_START:
                starts[event.step_key] = event.timestamp
            elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                steps.append((event.step_key, starts[event.step_key], event.timestamp))
    return steps
