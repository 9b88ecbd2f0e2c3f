"""Running submitted models where the data lives: ``cardbench evaluate-model``.

A submitted model (an ONNX file run with onnxruntime, so no code of the submission is executed, or a
cardbench baseline checkpoint) is applied to the reference images, and its predictions are scored
through the same :func:`cardbench.benchmark.score` path as any prediction folder.

Modules: :mod:`~cardbench.evaluate.modelcard` (``model.yaml``: declaration and validation),
:mod:`~cardbench.evaluate.preprocess` (resize, pad, crop, intensity normalisation; numpy only),
:mod:`~cardbench.evaluate.runners` (onnxruntime and baseline-checkpoint runners, limits),
:mod:`~cardbench.evaluate.evaluate` (:func:`evaluate_model`).
"""

from cardbench.evaluate.modelcard import Limits, ModelCard, ModelCardError, load_model_card  # noqa: F401
from cardbench.evaluate.evaluate import EvaluationError, evaluate_model  # noqa: F401
