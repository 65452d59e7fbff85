# The training stack: the Dagster code location, webserver and daemon, and the MLflow server.
# Built from uv.lock with every group but dev. Build: docker build -t churn-platform .
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /opt/churn
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-group dev --no-install-project
COPY churn_assets churn_assets
COPY serving serving
RUN uv sync --frozen --no-group dev --no-editable

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 churn \
    && mkdir -p /opt/dagster/dagster_home /data \
    && chown -R churn /opt/dagster /data
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster/dagster.yaml deploy/dagster/workspace.yaml /opt/dagster/dagster_home/
ARG GIT_SHA=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CHURN_GIT_SHA=$GIT_SHA
USER churn
WORKDIR /opt/dagster/dagster_home
EXPOSE 3000 4000 5000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "churn_assets.definitions"]
