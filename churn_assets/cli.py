"""`churn`: synthetic data, the production model's status, and rollback, from the shell.

Plain MLflow and pandas only: these commands work where Dagster is not installed.
"""

from __future__ import annotations

import argparse
import sys

from churn_assets.ml import registry, synthetic, tracking
from churn_assets.ml.settings import ChurnSettings


def _production(args: argparse.Namespace) -> int:
    settings = ChurnSettings()
    client = tracking.client(settings)
    version = registry.production_version(client, settings.model_name, settings.production_alias)
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
        registry.PREVIOUS_TAG,
        "git_sha",
        "data_sha256",
        "dagster_run_id",
    ):
        print(f"  {key}: {tags.get(key, '-')}")
    print(f"  model_uri: models:/{settings.model_name}@{settings.production_alias}")
    print(f"  tracking_uri: {settings.tracking_uri}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    settings = ChurnSettings()
    client = tracking.client(settings)
    try:
        move = registry.rollback(
            client, settings.model_name, settings.production_alias, args.to_version
        )
    except registry.PromotionRefusedError as refusal:
        print(f"rollback refused: {refusal}", file=sys.stderr)
        return 1
    if move.changed:
        print(f"{move.model_name}@{move.alias}: version {move.previous_version} -> {move.version}")
    else:
        print(f"{move.model_name}@{move.alias} already on version {move.version}")
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
