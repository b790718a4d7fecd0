"""Orchestration: the pareto runner (split by job) and the ablation; they drive trials and the reporting layer."""
