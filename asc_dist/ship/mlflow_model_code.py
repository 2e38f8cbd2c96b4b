"""MLflow "models from code" entry point of a registered student: MLflow runs this file to build the pyfunc
(no pickled object in the model folder, so loading a registered model runs no stored bytecode)."""

from mlflow.models import set_model

from asc_dist.ship.mlflow_model import StudentPyfunc

set_model(StudentPyfunc())
