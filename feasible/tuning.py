"""The stated rules that choose a learning rate from pilot records, and the grids they write.

Two rules, each applied to finished result records of seed 0 only, so that the seeds reported
afterwards are not the seeds a rate was chosen on:

- :func:`closest_to_retrained` (the authors' protocol, whose Adam at 1e-4 barely moves a small
  model in 30 short epochs): per base method without add-on, the rate whose final UA is closest
  to the retrained model's, among the rates whose test accuracy stays within ``ta_drop`` points
  of the original model's.
- :func:`lowest_avg_gap` (the fair comparison of add-ons under the literature's protocol, where a
  mask shrinks the step): per (base method, add-on), the rate with the lowest final Avg. Gap.

Diverged runs are never chosen. Ties go to the smaller rate.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["closest_to_retrained", "lowest_avg_gap"]


def _usable(record: Mapping[str, Any]) -> bool:
    return record.get("diverged_epoch") is None and all(
        isinstance(record["final"].get(k), (int, float)) and math.isfinite(record["final"][k])
        for k in ("UA", "TA", "avg_gap"))


def record_rate(record: Mapping[str, Any]) -> float:
    """The learning rate a record ran at: its configuration's, else its method's default."""
    lr = record["config"].get("lr")
    return float(lr if lr is not None else record["method"]["default_lr"])


def _pick(records: Iterable[Mapping[str, Any]], key, score) -> dict[Any, dict[str, Any]]:
    """Per group ``key(record)``, the usable record with the lowest ``(score, rate)``."""
    best: dict[Any, tuple[tuple[float, float], Mapping[str, Any]]] = {}
    for record in records:
        if not _usable(record):
            continue
        group, rank = key(record), (score(record), record_rate(record))
        if group not in best or rank < best[group][0]:
            best[group] = (rank, record)
    return {group: {"lr": record_rate(record), "score": rank[0], "hash": record["hash"]}
            for group, (rank, record) in best.items()}


def closest_to_retrained(records: Iterable[Mapping[str, Any]], *,
                         ta_drop: float = 3.0) -> dict[str, dict[str, Any]]:
    """Per base method, the rate whose final UA is closest to the retrained model's.

    Args:
        records: finished records of the pilot (one per rate; add-on ``none``, seed 0).
        ta_drop: the largest test-accuracy drop from the original model allowed, in points.

    Returns:
        ``{method: {"lr", "score" (|UA - UA_retrained|), "hash" (of the chosen record)}}``.

    Raises:
        ValueError: a record of another seed or add-on, or a negative ``ta_drop``.
    """
    if not ta_drop >= 0:
        raise ValueError(f"The 'ta_drop' parameter must be >= 0 points. Got {ta_drop!r} instead.")
    records = list(records)
    _check_pilot(records, addons={"none"})
    kept = [r for r in records
            if r["original"]["metrics"]["TA"] - r["final"]["TA"] <= ta_drop]
    return _pick(kept, lambda r: r["config"]["method"],
                 lambda r: abs(r["final"]["UA"] - r["retrained"]["metrics"]["UA"]))


def lowest_avg_gap(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (base method, add-on), the rate with the lowest final Avg. Gap.

    Args:
        records: finished records of the pilot (seed 0), several rates per pair.

    Returns:
        ``{(method, addon): {"lr", "score" (the Avg. Gap), "hash"}}``.

    Raises:
        ValueError: a record of another seed.
    """
    records = list(records)
    _check_pilot(records)
    return _pick(records, lambda r: (r["config"]["method"], r["config"]["addon"]),
                 lambda r: r["final"]["avg_gap"])


def _check_pilot(records: list[Mapping[str, Any]], addons: set[str] | None = None) -> None:
    for record in records:
        config = record["config"]
        if config["seed"] != 0:
            raise ValueError(f"The rules choose on seed 0 only; record {record['hash']} has seed "
                             f"{config['seed']}.")
        if addons is not None and config["addon"] not in addons:
            raise ValueError(f"Record {record['hash']} has add-on {config['addon']!r}; this rule "
                             f"reads {sorted(addons)} only.")
