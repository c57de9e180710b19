"""The x-oss-process language and its execution: parse -> Pipeline -> plan -> run."""

from .parser import Pipeline, parse
from .engine import Result, run

__all__ = ["Pipeline", "Result", "parse", "run"]
