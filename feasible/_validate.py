"""Small checks shared by the public boundaries (STYLE.md section 5)."""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A finite real number (Python or numpy), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def names(options: Iterable[Any]) -> str:
    """The allowed values as the error messages list them: ``'a', 'b', 'c'``."""
    return ", ".join(repr(o) for o in options)
