"""Grids of configurations and a resumable sweep over them (one record file per configuration)."""
from __future__ import annotations

import itertools
import json
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from feasible._validate import resolve_device
from feasible.experiment import (
    ClaimedError,
    Config,
    claim_owner,
    claim_path,
    compute_once,
    config_hash,
    finished_record,
    record_path,
)
from feasible.paths import check_writable, results_dir

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
    """Read and check a grid file: a JSON object whose shape :func:`check_grid` accepts.

    Raises:
        ValueError: the file is missing, a folder, unreadable, empty, not JSON, or not a grid
            (the message names the file and, for a bad field, the field).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"The grid file {path} does not exist.") from None
    except IsADirectoryError:
        raise ValueError(f"The grid file {path} is a folder, not a JSON file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"The grid file {path} cannot be read: {err}.") from None
    if not text.strip():
        raise ValueError(f"The grid file {path} is empty; expected a JSON object such as "
                         f'{{"fixed": {{"scale": "smoke"}}, "methods": ["ft"]}}.')
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"The grid file {path} is not valid JSON: {err}.") from None
    check_grid(grid, f"The grid file {path}")
    return grid


def check_grid(grid: Any, where: str = "The grid") -> None:
    """Check the shape of a parsed grid (what :func:`expand` reads), not yet its values.

    Args:
        grid: the parsed grid.
        where: how messages name the grid, e.g. ``"The grid file grids/cpu.json"``.

    Raises:
        ValueError: the grid is not an object, ``fixed`` is not an object, ``description`` is not
            a string, an axis is not a non-empty list, or an axis entry is neither a value
            (string, number, boolean, ``null``) nor an object (the message names the key).
    """
    if not isinstance(grid, Mapping):
        raise ValueError(f"{where} must hold a JSON object. Got {type(grid).__name__} instead.")
    if not isinstance(grid.get("fixed", {}), Mapping):
        raise ValueError(f"{where}: 'fixed' must be an object of Config fields. Got "
                         f"{grid['fixed']!r} instead.")
    if not isinstance(grid.get("description", ""), str):
        raise ValueError(f"{where}: 'description' must be a string. Got "
                         f"{grid['description']!r} instead.")
    for key, values in grid.items():
        if key in META_KEYS:
            continue
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: the grid key {key!r} must be a non-empty list. "
                             f"Got {values!r} instead.")
        for value in values:
            if not isinstance(value, (str, int, float, bool, Mapping)) and value is not None:
                raise ValueError(f"{where}: the entry {value!r} of grid key {key!r} must be a "
                                 f"value (string, number, boolean, null) or an object of Config "
                                 f"fields.")


def expand(grid: Mapping[str, Any]) -> list[Config]:
    """The configurations of a grid: the product of its axes, in file order.

    A grid is a JSON object. ``fixed`` is an object of :class:`~feasible.experiment.Config`
    fields shared by every configuration; ``description`` is free text. Every other key is an
    axis, a non-empty list: a plural name of :data:`AXES` (``datasets``, ``models``,
    ``scenarios``, ``methods``, ``addons``, ``seeds``) or a Config field name (e.g. ``"lr"``).
    An entry of an axis is a value of that field, or an object of several fields (e.g.
    ``{"scenario": "random", "forget_fraction": 0.1}`` or ``{"method": "ngplus", "lr": 0.5}``).
    Later axes override earlier ones and ``fixed`` where they set the same field.

    Args:
        grid: the parsed grid.

    Returns:
        The configurations, validated, duplicates (same hash) removed, first kept.

    Raises:
        ValueError: a grid :func:`check_grid` refuses, an unknown key or field, or an entry that
            :class:`~feasible.experiment.Config` refuses (the message names the entry).
    """
    check_grid(grid)
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
    """What a sweep did with its configurations.

    Attributes:
        total: the configurations given.
        done: labels of those this sweep computed.
        skipped: labels of those already recorded (finished records).
        elsewhere: labels of those another live process was computing (claimed), left to it.
        failed: ``(label, error)`` of those that raised.
        unrecorded: ``(label, error)`` of failures whose failure record could not be written.
        remaining: those left over by ``limit``.
    """

    total: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unrecorded: list[tuple[str, str]] = field(default_factory=list)
    remaining: int = 0

    def lines(self) -> list[str]:
        """The summary as text lines."""
        out = [f"{self.total} configurations: {len(self.done)} computed, {len(self.skipped)} "
               f"already recorded, {len(self.failed)} failed, {self.remaining} left (--limit), "
               f"{len(self.elsewhere)} running elsewhere."]
        out += [f"FAILED {name}: {error}" for name, error in self.failed]
        out += [f"NOT RECORDED the failure of {name}: {error}" for name, error in self.unrecorded]
        return out


def failure_path(config: Config) -> Path:
    """Where a failed run's error is kept: ``results_dir()/<scale>/failed/<hash>.json``."""
    return results_dir() / config.scale / "failed" / f"{config_hash(config)}.json"


def sweep(configs: Iterable[Config], *, device: Any = None, limit: int | None = None,
          dry_run: bool = False, progress: bool = True,
          runner: Callable[..., tuple[dict[str, Any], bool]] = compute_once) -> SweepSummary:
    """Run every configuration that has no finished record yet, one after the other.

    Each run writes its own record atomically (:func:`feasible.experiment.run`), so a sweep that
    is killed and restarted skips what finished and redoes at most the run it was in. A record
    file that is not finished (:func:`feasible.experiment.read_record`) is moved aside and its
    configuration computed again. Every configuration is computed under its claim
    (:func:`feasible.experiment.claim`): a configuration that another live process (another
    sweep, a cluster task) is computing is left to it and reported as running elsewhere, so
    sweeps over the same grid share the work and never compute a configuration twice. A
    failing configuration is caught, its traceback kept in :func:`failure_path` (removed once it
    succeeds; a failure record that cannot be written is reported, not fatal), and the sweep
    goes on; the summary lists the failures. One line per configuration tried says what became
    of it (``computed``, ``recorded`` meanwhile, ``running elsewhere``, ``failed``), with its
    hash. The device and the results folders are checked before any computation.

    Args:
        configs: the configurations (e.g. :func:`expand` of a grid).
        device: where to compute (``None``: CUDA when available, else the CPU).
        limit: compute at most this many configurations (records already present do not count).
        dry_run: compute nothing; report what would run.
        progress: show a tqdm progress bar with the remaining-time estimate.
        runner: runs one configuration, ``runner(config, device=..., wait=False)``, and returns
            the record and whether it computed it (:func:`feasible.experiment.compute_once`;
            tests replace it).

    Returns:
        A :class:`SweepSummary`.

    Raises:
        ValueError: ``limit`` is not ``None`` or an int ``>= 0``, or an unknown or unavailable
            device.
        OSError: a results folder cannot be written (a ``NotWritableError`` of
            ``feasible.paths``, naming the folder).
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"The 'limit' parameter of sweep must be None or an int >= 0. "
                         f"Got {limit!r} instead.")
    device = resolve_device(device)
    configs = list(configs)
    summary = SweepSummary(total=len(configs))
    todo = []
    for config in configs:
        finished = finished_record(config, move_aside=False) is not None
        (summary.skipped if finished else todo).append(config)
        if finished and not dry_run:
            _drop_stale_claim(record_path(config))
    summary.skipped = [label(c) for c in summary.skipped]
    if limit is not None:
        summary.remaining = max(len(todo) - limit, 0)
        todo = todo[:limit]
    if dry_run:
        summary.remaining += len(todo)
        return summary
    for scale in sorted({config.scale for config in todo}):
        check_writable(results_dir() / scale)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True)
    say = bar.write if bar is not None else print
    for config in todo:
        name = label(config)
        if bar is not None:
            bar.set_postfix_str(name)
        _one(config, name, device, runner, summary, say)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return summary


def _one(config: Config, name: str, device: Any, runner: Callable[..., Any],
         summary: SweepSummary, say: Callable[[str], Any]) -> None:
    """Run one configuration of a sweep and file the outcome in ``summary``."""
    digest = config_hash(config)
    try:
        _, computed = runner(config, device=device, wait=False)
    except ClaimedError as err:
        summary.elsewhere.append(name)
        say(f"running elsewhere {digest} {name} ({err.who})")
    except Exception as err:  # one configuration's failure must not stop the sweep
        error = f"{type(err).__name__}: {err}"
        summary.failed.append((name, error))
        say(f"failed {digest} {name}: {error}")
        problem = _record_failure(config, err)
        if problem is not None:
            summary.unrecorded.append((name, problem))
    else:
        (summary.done if computed else summary.skipped).append(name)
        say(f"{'computed' if computed else 'recorded'} {digest} {name}")
        try:
            failure_path(config).unlink(missing_ok=True)
        except OSError:
            pass


def _drop_stale_claim(path: Path) -> None:
    """Remove the claim file a killed process left beside its finished record ``path``.

    Safe even if another process takes the claim meanwhile: the record is finished, so whoever
    holds its claim finds it so and computes nothing.
    """
    cpath = claim_path(path)
    if cpath.exists() and claim_owner(path) is None:
        try:
            cpath.unlink()
        except OSError:
            pass


def _record_failure(config: Config, err: BaseException) -> str | None:
    """Write the failure record of ``config``; the error that prevented it, or ``None``."""
    path = failure_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": config.to_dict(), "error": repr(err),
                                    "traceback": traceback.format_exc(),
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    except OSError as write_err:
        return f"{path}: {type(write_err).__name__}: {write_err}"
    return None
