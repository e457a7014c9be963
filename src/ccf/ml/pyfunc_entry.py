"""The file MLflow runs to build a CCF model's pyfunc ("models from code"): the model is
code plus its saved folder, never a pickle, so loading it needs no CloudPickle and works
wherever the logged requirements and code paths are."""

import mlflow

from ccf.ml.pyfunc import CCFModel

mlflow.models.set_model(CCFModel())
