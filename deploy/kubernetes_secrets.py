"""Render the Secrets and the verify-key ConfigMap of deploy/kubernetes from a `.env` file.

    python -m deploy.kubernetes_secrets --env-file .env | kubectl apply --server-side -f -

One Secret per credential, so each pod names exactly the credentials it holds (the manifests
say which, and the tests check it): the API gets the read-only store keys and its API key,
never the database password, the read-write store keys or the signing key. The public key is
not a secret: it is a ConfigMap every loader reads. The preflight checks run first (the
variables of MinIO's root are not asked for: on Kubernetes the store is the cluster's own), and
nothing is rendered while one fails. `--server-side` keeps the values out of the
`last-applied-configuration` annotation that a client-side apply writes.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy import preflight

NAMESPACE = "churn"
LABELS = {"app.kubernetes.io/part-of": "churn-platform"}
#: Secret: {variable the pod sees: variable of the env file}.
SECRETS: dict[str, dict[str, str]] = {
    # Dagster's storage and MLflow's backend store
    "churn-postgres": {"POSTGRES_USER": "POSTGRES_USER", "POSTGRES_PASSWORD": "POSTGRES_PASSWORD"},
    # the pipeline's store account: writes models, snapshots and run outputs
    "churn-store-readwrite": {
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    },
    # the API's store account: may read the `mlflow` bucket, nothing else
    "churn-store-readonly": {
        "AWS_ACCESS_KEY_ID": "API_AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "API_AWS_SECRET_ACCESS_KEY",
    },
    # signs models and gate verdicts: only what trains, evaluates, promotes or rolls back
    "churn-signing-key": {"CHURN_SIGNING_KEY": "CHURN_SIGNING_KEY"},
    "churn-api-key": {"CHURN_API_KEY": "CHURN_API_KEY"},
    # signs the retention console's session cookies
    "churn-console-secret": {"CHURN_CONSOLE_SECRET": "CHURN_CONSOLE_SECRET"},
}
#: ConfigMap: {variable the pod sees: variable of the env file}.
CONFIG_MAPS: dict[str, dict[str, str]] = {
    "churn-verify-key": {"CHURN_VERIFY_KEY": "CHURN_VERIFY_KEY"},
}


def _sources() -> list[str]:
    return [v for items in (*SECRETS.values(), *CONFIG_MAPS.values()) for v in items.values()]


def problems(environ: Mapping[str, str]) -> list[str]:
    """The preflight checks of every variable rendered here (and only those)."""
    used = set(_sources())
    return preflight.problems(
        environ,
        secrets=[n for n in preflight.SECRETS if n in used],
        required=[n for n in preflight.REQUIRED if n in used],
    )


def _metadata(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": dict(LABELS)}


def render(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The Secrets and ConfigMaps, as Kubernetes objects."""
    documents: list[dict[str, Any]] = []
    for name, items in SECRETS.items():
        data = {
            key: base64.b64encode(environ[source].encode()).decode()
            for key, source in items.items()
        }
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _metadata(name),
                "type": "Opaque",
                "data": data,
            }
        )
    for name, items in CONFIG_MAPS.items():
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _metadata(name),
                "data": {key: environ[source] for key, source in items.items()},
            }
        )
    return documents


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, required=True, help="e.g. .env")
    args = parser.parse_args(argv)
    if sys.stdout.isatty():
        print(
            "kubernetes_secrets: this prints secrets; pipe it: "
            "python -m deploy.kubernetes_secrets --env-file .env | "
            "kubectl apply --server-side -f -",
            file=sys.stderr,
        )
        return 2
    environ = preflight.read_env_file(args.env_file)
    found = problems(environ)
    if found:
        return preflight.report(found, "render the Kubernetes secrets")
    yaml.safe_dump_all(render(environ), sys.stdout, sort_keys=False)
    print(f"kubernetes_secrets: {len(SECRETS)} secrets and the verify key", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
