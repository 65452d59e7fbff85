"""The production configuration on real servers: MLflow server on PostgreSQL with S3 artifacts
(moto's standalone server standing in for MinIO), Dagster on PostgreSQL storage, and the slim
API serving the promoted model through that MLflow server. Environment variables only."""

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import pytest

from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.stores import snapshot_store
from churn_assets_tests.conftest import (
    ChurnEnv,
    failure_messages,
    materialize_graph,
    session_signer,
    signing_key_pem,
)
from churn_assets_tests.processes import (
    Postgres,
    base_env,
    call_json,
    free_port,
    mlflow_server_command,
    running,
)
from churn_assets_tests.test_serving import customer_payloads
from churn_assets_tests.test_serving_e2e import churn_env_holdout

S3_KEYS = {"AWS_ACCESS_KEY_ID": "churn-test", "AWS_SECRET_ACCESS_KEY": "churn-test-secret"}


@pytest.fixture
def databases(postgres: Postgres) -> Iterator[tuple[str, ...]]:
    with postgres.databases("churn_mlflow", "churn_dagster") as names:
        yield names


def test_graph_and_api_on_postgres_s3_and_mlflow_server(
    churn_env: ChurnEnv,
    postgres: Postgres,
    databases: tuple[str, ...],
    slim_python: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mlflow_db, dagster_db = databases
    s3_port, mlflow_port, api_port = free_port(), free_port(), free_port()
    s3_url = f"http://127.0.0.1:{s3_port}"
    s3_env = {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3_url, "AWS_DEFAULT_REGION": "us-east-1"}
    moto = [str(Path(dg.__file__).parents[4] / "bin" / "moto_server"), "-H", "127.0.0.1"]
    with running(
        [*moto, "-p", str(s3_port)], base_env(), f"{s3_url}/moto-api/", tmp_path / "s3.log"
    ):
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", **_keys())
        s3.create_bucket(Bucket="mlflow")
        s3.create_bucket(Bucket="churn")
        monkeypatch.setenv("CHURN_SNAPSHOT_URI", "s3://churn/snapshots")
        server = [
            *mlflow_server_command(postgres.url(mlflow_db, "postgresql+psycopg2"), mlflow_port),
            *("--default-artifact-root", "s3://mlflow/", "--no-serve-artifacts"),
        ]
        with running(
            server,
            base_env(**s3_env),
            f"http://127.0.0.1:{mlflow_port}/health",
            tmp_path / "mlflow.log",
        ):
            tracking_uri = f"http://127.0.0.1:{mlflow_port}"
            monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
            # a server hides its database: promotions lock in it explicitly (as compose does)
            monkeypatch.setenv("CHURN_REGISTRY_LOCK", postgres.url(mlflow_db))
            # training's key as a deployment hands it over (never made in a state folder)
            for name, value in {**s3_env, "CHURN_SIGNING_KEY": signing_key_pem()}.items():
                monkeypatch.setenv(name, value)
            storage = {
                "postgres": {
                    "postgres_db": {
                        "scheme": "postgresql+psycopg2",
                        "username": postgres.user,
                        "password": "",
                        "hostname": postgres.host,
                        "db_name": dagster_db,
                        "port": postgres.port,
                    }
                }
            }
            with dg.instance_for_test(overrides={"storage": storage}) as instance:
                # run outputs on the artifact store, as CHURN_IO_URI puts them in compose
                result = materialize_graph(churn_env, instance, io_base="s3://churn/runs")
                assert result.success, failure_messages(result)
                run_keys = [
                    o["Key"] for o in s3.list_objects_v2(Bucket="churn", Prefix="runs/")["Contents"]
                ]
                prefix = f"runs/{result.run_id}/"
                assert f"{prefix}cleaned_customers/part-00000.parquet" in run_keys
                assert f"{prefix}cleaned_customers.pkl" in run_keys
                assert f"{prefix}customer_splits.pkl" in run_keys
                assert not churn_env.storage_dir.exists()
                # Another container: nothing of the first one's disk, the same instance and
                # store. churn_scores reads cleaned_customers back from S3.
                monkeypatch.chdir(tmp_path)
                again = materialize_graph(
                    churn_env, instance, selection=["churn_scores"], io_base="s3://churn/runs"
                )
                assert again.success, failure_messages(again)
                assert len(instance.get_runs()) == 2

            # Dagster's runs are in PostgreSQL, the model's files in S3, the registry on the server
            with (
                postgres.connect(dagster_db) as connection,
                connection.cursor() as c,
            ):
                c.execute("SELECT count(*) FROM runs")
                assert c.fetchone()[0] == 2
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow")["Contents"]]
            assert any(k.endswith("MLmodel") for k in keys)
            assert any(k.endswith("evaluation/report.json") for k in keys)
            assert not any((churn_env.state_dir / n).exists() for n in ("mlflow.db", "signing"))
            # the snapshot the version learned from is in S3 too, and read back intact
            store = snapshot_store(ChurnSettings())
            (snapshot,) = store.all()
            data = f"snapshots/data/{snapshot.id}.parquet"
            assert data in [o["Key"] for o in s3.list_objects_v2(Bucket="churn")["Contents"]]
            assert len(store.read(snapshot.id)) == 7043
            version = churn_env.client.get_model_version_by_alias("churn-classifier", "production")
            assert str(version.version) == "1"
            assert version.tags["snapshot_id"] == store.current_id() == snapshot.id

            api_env = base_env(
                MLFLOW_TRACKING_URI=tracking_uri,
                CHURN_API_PORT=str(api_port),
                CHURN_STATE_DIR=str(tmp_path / "api-state"),
                # the public half only, as compose and Kubernetes give the API
                CHURN_VERIFY_KEY=session_signer().verifier.pem(),
                **s3_env,
            )
            payload = json.dumps(customer_payloads(churn_env_holdout(churn_env))[0])
            with running(
                [str(slim_python), "-m", "serving"],
                api_env,
                f"http://127.0.0.1:{api_port}/ready",
                tmp_path / "api.log",
            ):
                status, body = call_json(api_port, "POST", "/predict", payload)
                assert (status, body["model_version"]) == (200, "1")


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    }
