"""`churn`: synthetic data, the production model's status, and rollback, from the shell.

Plain MLflow and pandas only: these commands work where Dagster is not installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities.model_registry import ModelVersion

from churn_assets.ml import registry, remote_data, synthetic, tracking
from churn_assets.ml.ports import port_in_use
from churn_assets.ml.settings import ChurnSettings


def _production(args: argparse.Namespace) -> int:
    settings = ChurnSettings()
    opened = registry.open_registry(settings)
    version = opened.production()
    if args.markdown:
        print(_markdown_summary(settings, opened, version))
        return 0 if version is not None else 1
    if version is None:
        print(
            f"{settings.model_name} has no {settings.production_alias!r} version "
            f"in {without_credentials(settings.tracking_uri)}",
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
        "snapshot_id",
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
    print(f"  tracking_uri: {without_credentials(settings.tracking_uri)}")
    return 0


def without_credentials(uri: str) -> str:
    """A URI fit for a log or a CI summary: user and password, if any, left out."""
    parsed = urlsplit(uri)
    if parsed.username is None and parsed.password is None:
        return uri
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return urlunsplit(parsed._replace(netloc=f"***@{host}"))


def _fetch_data(args: argparse.Namespace) -> int:
    settings = ChurnSettings()
    try:
        size = remote_data.fetch_s3(args.uri, settings.data_path, settings)
    except Exception as error:
        print(f"fetch-data: {args.uri}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"fetched {args.uri} to {settings.data_path} ({size:,} bytes)")
    return 0


def _markdown_summary(
    settings: ChurnSettings, opened: registry.ModelRegistry, production: ModelVersion | None
) -> str:
    """The newest version's gate verdict and what production is: a CI job's summary."""
    versions = opened.client.search_model_versions(
        f"name = '{settings.model_name}'", order_by=["version_number DESC"], max_results=1
    )
    lines = [f"### {settings.model_name}", "", "| | version | quality gate | holdout AUC |"]
    lines.append("|---|---|---|---|")
    rows = [("newest", versions[0] if versions else None), ("production", production)]
    for label, version in rows:
        if version is None:
            lines.append(f"| {label} | none | - | - |")
            continue
        tags = version.tags or {}
        verdict = tags.get(registry.GATE_TAG, "-")
        if reason := tags.get(registry.GATE_REASON_TAG):
            verdict += f": {reason}"
        auc = tags.get("holdout_auc", "-")
        lines.append(f"| {label} | {version.version} | {verdict} | {auc} |")
    return "\n".join(lines)


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


def _check_port(args: argparse.Namespace) -> int:
    busy = port_in_use(args.host, args.port)
    if busy:
        print(f"{busy}; {args.hint}", file=sys.stderr)
        return 2
    return 0


def _mlflow_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the store these settings use, wherever MLFLOW_TRACKING_URI points."""
    settings = ChurnSettings()
    location = settings.artifact_location
    if location is None:  # a server: it keeps its own artifacts and serves its own UI
        print(f"MLFLOW_TRACKING_URI is a server: its UI is {settings.ui_url}")
        return 0
    busy = port_in_use("127.0.0.1", args.port)
    if busy:
        print(f"{busy}; choose another: make mlflow-ui PORT=5001", file=sys.stderr)
        return 2
    tracking.configure_mlflow(settings)
    command = [
        shutil.which("mlflow") or "mlflow",
        "ui",
        "--backend-store-uri",
        settings.tracking_uri,
        "--default-artifact-root",
        location,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        # one person's UI on a laptop: one worker, not MLflow's default four processes
        "--workers",
        "1",
    ]
    return subprocess.call(command)


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
    production.add_argument(
        "--markdown",
        action="store_true",
        help="the newest version's gate verdict and production, as a Markdown table",
    )
    production.set_defaults(handler=_production)

    fetch = commands.add_parser(
        "fetch-data",
        help="download the training snapshot from s3://bucket/key to CHURN_DATA_PATH "
        "(MLFLOW_S3_ENDPOINT_URL and the AWS_* credentials)",
    )
    fetch.add_argument("uri")
    fetch.set_defaults(handler=_fetch_data)

    check_port = commands.add_parser("check-port", help="exit 2 if a port cannot be listened on")
    check_port.add_argument("port", type=int)
    check_port.add_argument("--host", default="127.0.0.1")
    check_port.add_argument("--hint", default="choose another port")
    check_port.set_defaults(handler=_check_port)

    mlflow_ui = commands.add_parser(
        "mlflow-ui", help="the MLflow UI on the configured local store (SQLite)"
    )
    mlflow_ui.add_argument("--port", type=int, default=5000)
    mlflow_ui.set_defaults(handler=_mlflow_ui)

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
