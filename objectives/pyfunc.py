"""The MLflow pyfunc flavour of a bundle, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class BundleModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (or one column of texts), or a list of strings.
    Output: a DataFrame with ``label`` and one ``prob_<class>`` column per class."""

    def load_context(self, context) -> None:
        from objectives.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    # The hint is what `mlflow models serve` passes. MLflow infers no signature from a DataFrame hint and wraps no
    # validation around it, so lists and Series still reach this method as they are; without any hint, MLflow
    # warns (UserWarning "Add type hints to the `predict` method") each time this class is defined.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input.columns else model_input.columns[0]
            texts = model_input[column].astype(str).tolist()
        elif isinstance(model_input, pd.Series):
            texts = model_input.astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        proba = self.bundle.predict_proba(texts)
        labels = self.bundle.labels
        frame = pd.DataFrame({"label": [labels[i] for i in proba.argmax(axis=1)]})
        for i, name in enumerate(labels):
            frame[f"prob_{name}"] = proba[:, i]
        return frame
