"""Regression checks of the book's notebooks that hold on any machine.

A notebook's summary cell (tagged ``nbval-check-output``) prints the claims its page makes, and
``make test`` re-executes the page and compares the printout with the committed one. Training
and Monte Carlo on another CPU (other kernels, another thread count) take other floating-point
paths, so a number is printed with the tolerance its claim allows, ``approx(0.523, 0.05)`` ->
``"0.52 ± 0.05"``; :func:`outputs_agree` accepts two printouts that differ only in such numbers,
each within its stated tolerance. Everything else (words, booleans, counts, exact numbers) must
match character for character, so a changed formula still fails the comparison.
"""
from __future__ import annotations

import math
import re

#: A number printed with its tolerance: ``value ± tolerance``.
_APPROX = re.compile(r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?) ± (\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def approx(value: float, tol: float, digits: int | None = None) -> str:
    """``value`` printed with its tolerance, e.g. ``approx(0.523, 0.05) == "0.52 ± 0.05"``.

    Args:
        value: the measured number.
        tol: how far another machine's value may be and still support the same claim, > 0.
        digits: decimals printed (``None``: as many as ``tol`` needs, at least one).

    Returns:
        ``"<value> ± <tol>"``, both with ``digits`` decimals.

    Raises:
        ValueError: ``tol`` not a positive finite number, or ``digits`` negative.
    """
    if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"The 'tol' parameter of approx must be a positive finite number. "
                         f"Got {tol!r} instead.")
    if digits is None:
        digits = max(1, -math.floor(math.log10(tol) + 1e-9))
        while digits < 6 and round(tol, digits) != tol:  # print the tolerance as given
            digits += 1
    if not isinstance(digits, int) or digits < 0:
        raise ValueError(f"The 'digits' parameter of approx must be an int >= 0. "
                         f"Got {digits!r} instead.")
    return f"{float(value):.{digits}f} ± {tol:.{digits}f}"


def _ulp(text: str) -> float:
    """Half a unit in the last printed place of ``text`` (the rounding of the printout)."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def outputs_agree(reference: str, test: str) -> str | None:
    """Whether a re-executed printout supports the same claims as the committed one.

    The two texts must be identical once every ``value ± tolerance`` is blanked out; the
    tolerances must be printed identically; and each pair of values must differ by at most the
    tolerance plus the rounding of the two printouts (half a unit in the last place of each).

    Args:
        reference: the committed output.
        test: the output of the re-execution.

    Returns:
        ``None`` when they agree, else a message naming the first disagreement.
    """
    ref_numbers, test_numbers = _APPROX.findall(reference), _APPROX.findall(test)
    if _APPROX.sub("#", reference) != _APPROX.sub("#", test):
        return "the texts differ outside the 'value ± tolerance' numbers"
    for (ref_value, ref_tol), (test_value, test_tol) in zip(ref_numbers, test_numbers):
        if ref_tol != test_tol:
            return f"tolerance {test_tol} printed where the reference has {ref_tol}"
        slack = float(ref_tol) + _ulp(ref_value) + _ulp(test_value)
        if abs(float(ref_value) - float(test_value)) > slack + 1e-12:
            return (f"{test_value} is not within {ref_tol} of the reference {ref_value} "
                    f"(difference {abs(float(ref_value) - float(test_value)):.3g})")
    return None
