"""The registry: MLflow tracking, the model registry's versions, tags and aliases, and its lock."""
