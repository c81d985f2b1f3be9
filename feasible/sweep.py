"""Grids of configurations and a resumable sweep over them (one record file per configuration)."""
from __future__ import annotations

import itertools
import json
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from feasible.experiment import Config, config_hash, record_path, run
from feasible.paths import results_dir

#: Plural grid keys and the :class:`~feasible.experiment.Config` field each one sets.
AXES: dict[str, str] = {
    "datasets": "dataset",
    "models": "model",
    "scenarios": "scenario",
    "methods": "method",
    "addons": "addon",
    "seeds": "seed",
}
#: Grid keys that are not axes.
META_KEYS: tuple[str, ...] = ("description", "fixed")


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a grid file (a JSON object).

    Raises:
        ValueError: the file is not a JSON object.
    """
    grid = json.loads(Path(path).read_text())
    if not isinstance(grid, dict):
        raise ValueError(f"The grid file {path} must hold a JSON object. "
                         f"Got {type(grid).__name__}.")
    return grid


def expand(grid: Mapping[str, Any]) -> list[Config]:
    """The configurations of a grid: the product of its axes, in file order.

    A grid is a JSON object. ``fixed`` is an object of :class:`~feasible.experiment.Config`
    fields shared by every configuration; ``description`` is free text. Every other key is an
    axis, a non-empty list: a plural name of :data:`AXES` (``datasets``, ``models``,
    ``scenarios``, ``methods``, ``addons``, ``seeds``) or a Config field name (e.g. ``"lr"``).
    An entry of an axis is a value of that field, or an object of several fields (e.g.
    ``{"scenario": "random", "forget_fraction": 0.1}`` or ``{"method": "ngplus", "lr": 0.5}``).
    Later axes override earlier ones and ``fixed`` where they set the same field.

    References:
        STYLE.md §4 (a grid is a JSON file of lists; a sweep is their product).

    Args:
        grid: the parsed grid.

    Returns:
        The configurations, validated, duplicates (same hash) removed, first kept.

    Raises:
        ValueError: an unknown key or field, an empty or non-list axis, or an entry that
            :class:`~feasible.experiment.Config` refuses (the message names the entry).
    """
    names = {f.name for f in fields(Config)}
    fixed = dict(grid.get("fixed", {}))
    for key in fixed:
        if key not in names:
            raise ValueError(f"Unknown Config field {key!r} in the grid's 'fixed'; expected one of "
                             f"{', '.join(repr(n) for n in sorted(names))}.")
    axes: list[list[dict[str, Any]]] = []
    for key, values in grid.items():
        if key in META_KEYS:
            continue
        target = AXES.get(key, key)
        if target not in names:
            allowed = sorted(set(AXES) | names | set(META_KEYS))
            raise ValueError(f"Unknown grid key {key!r}; expected one of "
                             f"{', '.join(repr(n) for n in allowed)}.")
        if not isinstance(values, list) or not values:
            raise ValueError(f"The grid key {key!r} must be a non-empty list. "
                             f"Got {values!r} instead.")
        entries = []
        for value in values:
            entry = dict(value) if isinstance(value, Mapping) else {target: value}
            for name in entry:
                if name not in names:
                    raise ValueError(f"Unknown Config field {name!r} in entry {value!r} of grid "
                                     f"key {key!r}.")
            entries.append(entry)
        axes.append(entries)
    configs, seen = [], set()
    for combo in itertools.product(*axes):
        values = dict(fixed)
        for entry in combo:
            values.update(entry)
        try:
            config = Config.from_dict(values)
        except (ValueError, TypeError) as err:
            raise ValueError(f"Grid entry {values} is not a valid configuration: {err}") from err
        digest = config_hash(config)
        if digest not in seen:
            seen.add(digest)
            configs.append(config)
    return configs


def label(config: Config) -> str:
    """A short human-readable name of a configuration."""
    scenario = (f"random{config.forget_fraction:g}" if config.scenario == "random"
                else f"class{config.forget_class}")
    return (f"{config.dataset}/{config.model}/{scenario}/{config.method}+{config.addon}"
            f"/seed{config.seed}")


@dataclass
class SweepSummary:
    """What a sweep did: configurations computed, skipped (record present), failed, left over."""

    total: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, error)
    remaining: int = 0

    def lines(self) -> list[str]:
        """The summary as text lines."""
        out = [f"{self.total} configurations: {len(self.done)} computed, {len(self.skipped)} "
               f"already recorded, {len(self.failed)} failed, {self.remaining} left (--limit)."]
        out += [f"FAILED {name}: {error}" for name, error in self.failed]
        return out


def failure_path(config: Config) -> Path:
    """Where a failed run's error is kept: ``results_dir()/<scale>/failed/<hash>.json``."""
    return results_dir() / config.scale / "failed" / f"{config_hash(config)}.json"


def sweep(configs: Iterable[Config], *, device: str | None = None, limit: int | None = None,
          dry_run: bool = False, progress: bool = True,
          runner: Callable[..., dict[str, Any]] = run) -> SweepSummary:
    """Run every configuration whose record does not exist yet, one after the other.

    Each run writes its own record atomically (:func:`feasible.experiment.run`), so a sweep that
    is killed and restarted skips what finished and redoes at most the run it was in. A failing
    configuration is caught, its traceback kept in :func:`failure_path` (removed once it
    succeeds), and the sweep goes on; the summary lists the failures. Independent of any
    scheduler: a cluster can run the same configurations as separate jobs.

    Args:
        configs: the configurations (e.g. :func:`expand` of a grid).
        device: passed to ``run``.
        limit: compute at most this many configurations (records already present do not count).
        dry_run: compute nothing; report what would run.
        progress: show a tqdm progress bar with the remaining-time estimate.
        runner: the function that runs one configuration (tests replace it).

    Returns:
        A :class:`SweepSummary`.

    Raises:
        ValueError: ``limit`` is not ``None`` or an int ``>= 0``.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"The 'limit' parameter of sweep must be None or an int >= 0. "
                         f"Got {limit!r} instead.")
    configs = list(configs)
    summary = SweepSummary(total=len(configs))
    todo = []
    for config in configs:
        (summary.skipped if record_path(config).exists() else todo).append(config)
    summary.skipped = [label(c) for c in summary.skipped]
    if limit is not None:
        summary.remaining = max(len(todo) - limit, 0)
        todo = todo[:limit]
    if dry_run:
        summary.remaining += len(todo)
        return summary
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True)
    for config in todo:
        name = label(config)
        if bar is not None:
            bar.set_postfix_str(name)
        try:
            runner(config, device=device)
        except Exception as err:  # one configuration's failure must not stop the sweep
            summary.failed.append((name, f"{type(err).__name__}: {err}"))
            path = failure_path(config)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"config": config.to_dict(), "error": repr(err),
                                        "traceback": traceback.format_exc(),
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
        else:
            summary.done.append(name)
            failure_path(config).unlink(missing_ok=True)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return summary
