"""Third-party libraries set up once per process: quiet loggers and progress bars."""

from __future__ import annotations

import logging
import os


def quiet_libraries() -> None:
    """Keep the console to one line per trial: silence Optuna's and the libraries' chatter."""
    import mlflow  # noqa: F401  (configures its loggers on import; quieted below)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials get our own one-line message
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "transformers", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
