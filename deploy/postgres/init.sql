-- Runs once, when the postgres volume is new: one database each for MLflow and Dagster.
CREATE DATABASE mlflow;
CREATE DATABASE dagster;
