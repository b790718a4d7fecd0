"""The file MLflow logs as a registered bundle's model ("models from code"): loading the version runs this readable
source, which builds a ``BundleModel``, instead of unpickling a Python object (no cloudpickle payload)."""

from mlflow.models import set_model

from objectives.pyfunc import BundleModel

set_model(BundleModel())
