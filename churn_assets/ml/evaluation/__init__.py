"""Evaluation: metrics, plots, the report, decisions, the gate, drift and realized performance."""
