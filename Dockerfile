# The training stack: the Dagster code location, webserver and daemon, the Dask cluster, the
# MLflow server and its read-only proxy, and the deploy check (preflight).
# Built from uv.lock with every group but dev. Build: docker build -t churn-platform .
# Base images pinned by digest (the tag says which release it is); uv from PyPI, hash-checked.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
COPY deploy/uv-bootstrap.txt /tmp/uv-bootstrap.txt
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps \
    -r /tmp/uv-bootstrap.txt
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /opt/churn
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-group dev --no-install-project
COPY churn_assets churn_assets
COPY serving serving
COPY console console
RUN uv sync --frozen --no-group dev --no-editable

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
# /data/state/console: the console's own volume, which Docker creates owned as here
RUN useradd --create-home --uid 10001 churn \
    && mkdir -p /opt/dagster/dagster_home /data/state/console \
    && chown -R churn /opt/dagster /data
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster/dagster.yaml deploy/dagster/workspace.yaml /opt/dagster/dagster_home/
# The deploy check and the API's read-only MLflow door run from this image (docker-compose.yml).
COPY deploy/preflight.py deploy/mlflow_read_proxy.py /opt/churn/deploy/
ARG GIT_SHA=unknown
# Models load only through our own signed format: MLflow may never unpickle one, even where a
# deployment forgets to say so.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CHURN_GIT_SHA=$GIT_SHA
USER churn
WORKDIR /opt/dagster/dagster_home
EXPOSE 3000 4000 5000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "churn_assets.definitions"]
