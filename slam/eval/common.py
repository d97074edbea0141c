"""Shared pieces of the evaluation: the error type and the summary statistics of an error array."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


class EvalError(ValueError):
    """The inputs cannot be evaluated (no matching timestamps, too few poses, degenerate alignment, ...)."""


@dataclass(frozen=True)
class Statistics:
    """Summary of an error array, in the unit of the errors; the same definitions as evo.

    ``std`` is the population standard deviation (ddof=0), ``sse`` the sum of
    squared errors, ``rmse = sqrt(sse / n)``.
    """

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    sse: float
    n: int

    @classmethod
    def from_errors(cls, errors: np.ndarray) -> "Statistics":
        e = np.asarray(errors, dtype=np.float64).reshape(-1)
        if e.size == 0:
            raise EvalError("no errors to summarise (empty error array)")
        sq = np.power(e, 2)
        return cls(
            rmse=math.sqrt(float(np.mean(sq))),
            mean=float(np.mean(e)),
            median=float(np.median(e)),
            std=float(np.std(e)),
            min=float(np.min(e)),
            max=float(np.max(e)),
            sse=float(np.sum(sq)),
            n=int(e.size),
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)
