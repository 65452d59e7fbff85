"""`churn`: synthetic data, the production model's status, and rollback, from the shell.

Plain MLflow and pandas only: these commands work where Dagster is not installed.
"""

from __future__ import annotations

import argparse
import sys

from churn_assets.ml import registry, synthetic
from churn_assets.ml.settings import ChurnSettings


def _production(args: argparse.Namespace) -> int:
    settings = ChurnSettings()
    version = registry.open_registry(settings).production()
    if version is None:
        print(
            f"{settings.model_name} has no {settings.production_alias!r} version "
            f"in {settings.tracking_uri}",
            file=sys.stderr,
        )
        return 1
    tags = version.tags
    print(f"{settings.model_name}@{settings.production_alias} = version {version.version}")
    for key in (
        "holdout_auc",
        "holdout_accuracy",
        "holdout_f1",
        registry.GATE_TAG,
        registry.GATE_THRESHOLDS_TAG,
        registry.COMPARED_WITH_TAG,
        registry.PREVIOUS_TAG,
        registry.PROMOTED_AT_TAG,
        "git_sha",
        "data_sha256",
        "dagster_run_id",
    ):
        print(f"  {key}: {tags.get(key, '-')}")
    override = registry.override_of(version)
    if override is not None:
        print(
            f"  GATE OVERRIDE: requested by {override.get('requested_by')} in Dagster run "
            f"{override.get('dagster_run_id')}: {override.get('reason')}; thresholds "
            f"{override.get('thresholds')}"
        )
    print(f"  model_uri: models:/{settings.model_name}@{settings.production_alias}")
    print(f"  tracking_uri: {settings.tracking_uri}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    settings = ChurnSettings()
    try:
        move = registry.open_registry(settings).rollback(args.to_version)
    except registry.WRITE_REFUSALS as refusal:
        print(f"rollback refused: {refusal}", file=sys.stderr)
        return 1
    if move.changed:
        print(f"{move.model_name}@{move.alias}: version {move.previous_version} -> {move.version}")
    else:
        print(f"{move.model_name}@{move.alias} already on version {move.version}")
    return 0


def _ensure_data(args: argparse.Namespace) -> int:
    """Demo data only where nobody asked for a file of their own."""
    settings = ChurnSettings()
    path = settings.data_path
    if path.is_file():
        print(f"using existing {path}")
        return 0
    if "data_path" in settings.model_fields_set:  # CHURN_DATA_PATH, in the env or .env
        print(
            f"CHURN_DATA_PATH is {path}, which does not exist: nothing was trained or "
            "promoted. Fix the path, or unset CHURN_DATA_PATH to train on synthetic demo data.",
            file=sys.stderr,
        )
        return 2
    rows = synthetic.DEFAULT_ROWS
    synthetic.write_customers(synthetic.generate_customers(rows), path)
    banner = "#" * 78
    print(
        f"{banner}\n# {path} did not exist: wrote {rows:,} SYNTHETIC demo customers there.\n"
        "# The model trained now learns from made-up data. Set CHURN_DATA_PATH to your\n"
        f"# export to train on real customers.\n{banner}"
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    synthetic.run(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churn", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser(
        "generate-data", help="write synthetic customers in the Telco export's schema"
    )
    synthetic.add_arguments(generate)
    generate.set_defaults(handler=_generate)

    ensure = commands.add_parser(
        "ensure-data",
        help="synthetic demo customers at the default data path if it is missing; an explicit "
        "CHURN_DATA_PATH that is missing is an error",
    )
    ensure.set_defaults(handler=_ensure_data)

    production = commands.add_parser(
        "production", help="show the production version and its holdout metrics"
    )
    production.set_defaults(handler=_production)

    rollback = commands.add_parser(
        "rollback", help="move production back to the version it replaced"
    )
    rollback.add_argument(
        "--to",
        dest="to_version",
        help="roll back to this version instead (it must have passed the quality gate)",
    )
    rollback.set_defaults(handler=_rollback)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.handler(args))
