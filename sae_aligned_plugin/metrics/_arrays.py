"""Small numpy helpers shared by the report dataclasses (frozen arrays, JSON-ready summaries)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from torch import Tensor


def frozen_array(values: Tensor | ArrayLike, dtype: type = np.float64) -> NDArray:
    """A read-only 1-D numpy copy of ``values`` (a report must not change after it is built)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    out = np.array(values, dtype=dtype).reshape(-1)
    out.setflags(write=False)
    return out


def describe(prefix: str, values: NDArray) -> dict[str, float]:
    """``{prefix}_mean/_std/_min/_median/_max`` as Python floats (NaN for an empty array)."""
    stats = ("mean", "std", "min", "median", "max")
    if values.size == 0:
        return {f"{prefix}_{name}": float("nan") for name in stats}
    return {f"{prefix}_{name}": float(getattr(np, name)(values)) for name in stats}
