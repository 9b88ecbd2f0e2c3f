"""Scoring harness: validation, metrics, protocols, aggregation, reports.

Main entry points::

    from cardbench.benchmark import score, score_confusion_table
    result = score("predictions/", "reference/", protocol="cardbench-v1")
    result.write("scores/")

The paper reproductions live in :mod:`cardbench.reproductions` (``reproduce_ankenbrand2021``).
Imports without torch, streamlit or datalad.
"""

from cardbench.benchmark.confusion_tables import read_confusion_table, score_confusion_table
from cardbench.benchmark.metric_registry import METRICS, MetricSpec, get_metric, register_metric
from cardbench.benchmark.protocols import PROTOCOLS, Protocol, ProtocolError, get_protocol, load_protocol
from cardbench.benchmark.results import ScoreResult, read_result
from cardbench.benchmark.scoring import score
from cardbench.benchmark.submission import SubmissionError, load_submission
from cardbench.benchmark.validation import Problem, ValidationError

__all__ = [
    "METRICS", "MetricSpec", "PROTOCOLS", "Problem", "Protocol", "ProtocolError", "ScoreResult", "SubmissionError",
    "ValidationError", "get_metric", "get_protocol", "load_protocol", "load_submission", "register_metric", "read_confusion_table", "read_result", "score",
    "score_confusion_table",
]
