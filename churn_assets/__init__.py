"""Churn platform code location.

Imports nothing, so `serving` can use `churn_assets.ml` without pulling in Dagster.
"""
