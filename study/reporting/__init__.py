"""Tracking and reporting: the MLflow door, Optuna-to-MLflow callbacks, fronts, reports, picks, store checks, progress lines."""
