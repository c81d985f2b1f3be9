"""Grids of configurations and a resumable sweep over them (one record file per configuration)."""
from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from feasible import progress as reporter
from feasible._validate import positive_int, resolve_device
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
#: Grid keys that are not axes (``grids``: a list of sub-grids, see :func:`expand`).
META_KEYS: tuple[str, ...] = ("description", "fixed", "grids")
#: The environment variable that sets the torch threads a sweep with ``jobs > 1`` shares out
#: among its workers (default: ``torch.get_num_threads()`` of the sweep's process).
THREADS_ENV: str = "FEASIBLE_THREADS"


def load_grid(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read and check a grid file: a JSON object whose shape :func:`check_grid` accepts.

    A file may hold ``"include": ["other.json", ...]`` (paths relative to it) instead of axes:
    it is then the union of those grids, in order, returned as one grid whose ``grids`` are
    theirs (its ``description`` is kept, each included ``fixed`` stays with its own part).

    Raises:
        ValueError: the file is missing, a folder, unreadable, empty, not JSON, or not a grid
            (the message names the file and, for a bad field, the field), or an include is
            missing, bad or includes itself.
    """
    path = Path(path)
    if path.resolve() in _seen:
        raise ValueError(f"The grid file {path} includes itself (through "
                         f"{' -> '.join(p.name for p in _seen)}).")
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
    if isinstance(grid, dict) and "include" in grid:
        names = grid.pop("include")
        others = [key for key in grid if key != "description"]
        if not isinstance(names, list) or not names or others \
                or not all(isinstance(n, str) for n in names):
            raise ValueError(f"The grid file {path}: 'include' must be a non-empty list of grid "
                             f"file paths, beside only 'description'. Got {names!r}"
                             + (f" beside {others}" if others else "") + " instead.")
        parts = []
        for name in names:
            included = load_grid(path.parent / name, _seen + (path.resolve(),))
            if "grids" in included:
                outer = included.get("fixed", {})
                parts += [dict(part, fixed={**outer, **part.get("fixed", {})})
                          for part in included["grids"]]
            else:
                parts.append({k: v for k, v in included.items() if k != "description"})
        grid = {**grid, "grids": parts}
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
    if "grids" in grid:
        parts = grid["grids"]
        axes = [key for key in grid if key not in META_KEYS]
        if not isinstance(parts, list) or not parts or axes:
            raise ValueError(f"{where}: 'grids' must be a non-empty list of sub-grids (objects "
                             f"of axes and 'fixed'), beside only 'description' and 'fixed'. Got "
                             f"{parts!r}" + (f" beside the axes {axes}" if axes else "")
                             + " instead.")
        for number, part in enumerate(parts, start=1):
            if isinstance(part, Mapping) and "grids" in part:
                raise ValueError(f"{where}: sub-grid {number} holds 'grids' itself; sub-grids "
                                 f"do not nest.")
            check_grid(part, f"{where}, sub-grid {number}")
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
    Later axes override earlier ones and ``fixed`` where they set the same field. A grid may
    instead hold ``grids``, a list of sub-grids (each with its own axes and ``fixed``, merged
    over the outer ``fixed``): its configurations are theirs, in order, e.g. one seed for every
    method and three for two of them.

    Args:
        grid: the parsed grid.

    Returns:
        The configurations, validated, duplicates (same hash) removed, first kept.

    Raises:
        ValueError: a grid :func:`check_grid` refuses, an unknown key or field, or an entry that
            :class:`~feasible.experiment.Config` refuses (the message names the entry).
    """
    check_grid(grid)
    if "grids" in grid:
        configs, seen = [], set()
        for part in grid["grids"]:
            merged = dict(part, fixed={**grid.get("fixed", {}), **part.get("fixed", {})})
            for config in expand(merged):
                digest = config_hash(config)
                if digest not in seen:
                    seen.add(digest)
                    configs.append(config)
        return configs
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
    """A short human-readable name of a configuration.

    Dataset, model, scenario, method + add-on and seed; then the protocol unless it is the
    default harness, and the learning rate, the add-on's ``p`` and ``renorm`` where a grid
    varies them (the learning rate always under the authors' protocol, where it is fixed).
    """
    scenario = (f"random{config.forget_fraction:g}" if config.scenario == "random"
                else f"class{config.forget_class}")
    text = (f"{config.dataset}/{config.model}/{scenario}/{config.method}+{config.addon}"
            f"/seed{config.seed}")
    if config.protocol != "harness":
        text += f" [{config.protocol}]"
    extras = [f"lr={config.lr:g}"] if config.lr is not None else []
    if config.addon == "prob":
        extras.append(f"p={config.p:g}")
    if config.renorm:
        extras.append("renorm")
    return text + (f" ({', '.join(extras)})" if extras else "")


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
          dry_run: bool = False, progress: bool = True, jobs: int = 1,
          runner: Callable[..., tuple[dict[str, Any], bool]] = compute_once) -> SweepSummary:
    """Run every configuration that has no finished record yet, in this process or in ``jobs``.

    Each run writes its own record atomically (:func:`feasible.experiment.run`), so a sweep that
    is killed and restarted skips what finished and redoes at most the runs it was in. A record
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

    With ``jobs > 1``, the configurations are shared out among worker processes (at most one per
    configuration to compute; started with ``multiprocessing``'s ``spawn``), each computing one
    configuration at a time under its claim exactly as above, with
    ``max(1, total // workers)`` torch threads, ``total`` being ``torch.get_num_threads()`` of
    this process or the environment variable ``FEASIBLE_THREADS``. The workers die with the
    sweep: when it returns or raises (Ctrl-C included) they are stopped, and a worker whose
    sweep process is killed (SIGTERM, SIGKILL) stops by itself within a second, releasing its
    claim; a record is never half-written, so a rerun computes only what is missing. A worker
    that dies during a run leaves that configuration failed (:func:`failure_path`) and is
    replaced. ``jobs=1`` computes in this process, one configuration after the other.

    Args:
        configs: the configurations (e.g. :func:`expand` of a grid).
        device: where to compute (``None``: CUDA when available, else the CPU).
        limit: compute at most this many configurations (records already present do not count).
        dry_run: compute nothing; report what would run.
        progress: show the sweep's progress: a tqdm bar of finished runs with the time left on a
            terminal, else one line per finished run on standard error. The phases of each run
            are shown too when ``feasible.progress`` is on (:func:`feasible.progress.enable`;
            the command line turns it on), labelled with the run and, with ``jobs > 1``, the
            worker's number.
        jobs: the number of worker processes, an int ``>= 1``.
        runner: runs one configuration, ``runner(config, device=..., wait=False)``, and returns
            the record and whether it computed it (:func:`feasible.experiment.compute_once`;
            tests replace it). With ``jobs > 1`` it must be picklable (a module-level function).

    Returns:
        A :class:`SweepSummary`.

    Raises:
        ValueError: ``limit`` is not ``None`` or an int ``>= 0``, ``jobs`` is not an int
            ``>= 1``, ``FEASIBLE_THREADS`` is not an int ``>= 1``, a ``runner`` that cannot be
            sent to a worker, or an unknown or unavailable device.
        OSError: a results folder cannot be written (a ``NotWritableError`` of
            ``feasible.paths``, naming the folder).
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"The 'limit' parameter of sweep must be None or an int >= 0. "
                         f"Got {limit!r} instead.")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"The 'jobs' parameter of sweep must be an int >= 1. Got {jobs!r} "
                         f"instead.")
    threads = _total_threads() if jobs > 1 else 0
    if jobs > 1:
        try:
            pickle.dumps(runner)
        except Exception as err:
            raise ValueError(f"The 'runner' parameter of sweep must be picklable (a module-level "
                             f"function) when jobs > 1, to reach the workers: {err}") from None
    show_phases = reporter.enabled()  # a bad FEASIBLE_PROGRESS fails here, before any work
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
    workers = min(jobs, len(todo))
    board = _Board(len(todo), progress)
    try:
        if workers <= 1:
            for config in todo:
                name = label(config)
                board.running(name)
                with reporter.labelled(name, transient=True):
                    _one(config, name, device, runner, summary, board.say)
                board.finished()
        else:
            _parallel(todo, workers, max(1, threads // workers), device, runner, summary, board,
                      show_phases)
    finally:
        board.close()
    return summary


class _Board:
    """The sweep's own report: a bar of finished runs on a terminal, else a line per run."""

    def __init__(self, total: int, show: bool) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.bar, self.lines = None, False
        if show and reporter._is_terminal(sys.stderr):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="run", dynamic_ncols=True, position=0)
        else:
            self.lines = show

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def running(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)

    def finished(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.lines:
            print(reporter.tally(self.done, self.total, time.perf_counter() - self.start),
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _total_threads() -> int:
    """The torch threads that the workers of a sweep share out (:data:`THREADS_ENV`)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        import torch

        return torch.get_num_threads()
    total = positive_int(value)
    if total is None:
        raise ValueError(f"{THREADS_ENV} must be an int >= 1 (the torch threads a sweep's "
                         f"workers share). Got {os.environ[THREADS_ENV]!r} instead.")
    return total


@dataclass
class _Worker:
    """A worker process of a parallel sweep, its end of the pipe, and what it is computing."""

    number: int
    process: Any
    conn: Any
    current: int | None = None


def _parallel(todo: list[Config], count: int, threads: int, device: Any,
              runner: Callable[..., Any], summary: SweepSummary, board: _Board,
              show_phases: bool) -> None:
    """Compute ``todo`` in ``count`` worker processes; file each outcome in ``summary``."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    lock = None
    if show_phases and reporter._is_terminal(sys.stderr):  # one terminal, several writers
        from tqdm import tqdm

        lock = context.RLock()
        tqdm.set_lock(lock)
    queue = list(range(len(todo)))[::-1]  # a stack: pop() gives the grid's order
    workers: dict[int, _Worker] = {}
    replacements = len(todo) + count  # a worker that dies is replaced, within reason

    def start(number: int) -> None:
        mine, theirs = context.Pipe()
        process = context.Process(
            target=_work, name=f"feasible-sweep-w{number}", daemon=True,
            args=(number, os.getpid(), theirs, device, runner, threads, show_phases, lock))
        process.start()
        theirs.close()
        workers[number] = _Worker(number, process, mine)
        hand_out(workers[number])

    def hand_out(worker: _Worker) -> None:
        worker.current = queue.pop() if queue else None
        try:
            if worker.current is None:
                worker.conn.send(None)  # no more work: the worker exits
            else:
                board.running(label(todo[worker.current]))
                worker.conn.send((worker.current, todo[worker.current]))
        except OSError:  # it died before getting it: the task goes back; its end comes below
            if worker.current is not None:
                queue.append(worker.current)
                worker.current = None

    def lost(worker: _Worker) -> None:
        """The worker ended: what it was computing failed, and another takes its place."""
        nonlocal replacements
        worker.process.join()
        worker.conn.close()
        del workers[worker.number]
        if worker.current is not None:
            config = todo[worker.current]
            if finished_record(config, move_aside=False) is not None:  # written before it died
                summary.done.append(label(config))
                board.say(f"computed {config_hash(config)} {label(config)}")
            else:
                _died(config, worker, summary, board.say)
            board.finished()
        if queue and replacements > 0:
            replacements -= 1
            start(worker.number)

    try:
        for number in range(1, count + 1):
            start(number)
        while workers:
            ends = {w.conn: w for w in workers.values()}
            ends.update({w.process.sentinel: w for w in workers.values()})
            for ready in wait(list(ends), timeout=1.0):
                worker = ends[ready]
                if worker.number not in workers or workers[worker.number] is not worker:
                    continue  # already handled in this round
                if ready is worker.conn:
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        lost(worker)
                        continue
                    _merge(summary, message, board.say)
                    board.finished()
                    hand_out(worker)
                elif not worker.conn.poll():  # ended, nothing left to read
                    lost(worker)
        while queue:  # every worker died and none may replace them: say so, do not drop them
            config = todo[queue.pop()]
            name, error = label(config), "no worker left to compute it (they kept dying)"
            summary.failed.append((name, error))
            board.say(f"failed {config_hash(config)} {name}: {error}")
            board.finished()
    finally:
        for worker in workers.values():
            if worker.process.is_alive():
                worker.process.terminate()  # its SIGTERM handler releases its claim
        deadline = time.monotonic() + 10
        for worker in workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


def _merge(summary: SweepSummary, message: tuple[SweepSummary, list[str]],
           say: Callable[[str], Any]) -> None:
    """File a worker's outcome of one configuration in ``summary`` and say its lines."""
    part, lines = message
    summary.done += part.done
    summary.skipped += part.skipped
    summary.elsewhere += part.elsewhere
    summary.failed += part.failed
    summary.unrecorded += part.unrecorded
    for text in lines:
        say(text)


class WorkerDiedError(RuntimeError):
    """A sweep's worker process ended while it computed a configuration."""


def _died(config: Config, worker: _Worker, summary: SweepSummary,
          say: Callable[[str], Any]) -> None:
    """File the configuration that ``worker`` was computing when it died as failed."""
    code = worker.process.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    try:
        raise WorkerDiedError(f"worker {worker.number} (process {worker.process.pid}) died while "
                              f"computing it ({how})")
    except WorkerDiedError as err:
        name = label(config)
        summary.failed.append((name, f"{type(err).__name__}: {err}"))
        say(f"failed {config_hash(config)} {name}: {type(err).__name__}: {err}")
        problem = _record_failure(config, err)
        if problem is not None:
            summary.unrecorded.append((name, problem))


def _work(number: int, parent: int, conn: Any, device: Any, runner: Callable[..., Any],
          threads: int, show_phases: bool, lock: Any) -> None:
    """A sweep's worker process: compute the configurations the sweep sends, one at a time."""
    import torch

    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the sweep stops its workers
    torch.set_num_threads(threads)
    reporter.enable(show_phases)
    if lock is not None:
        from tqdm import tqdm

        tqdm.set_lock(lock)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, config = task
        name = label(config)
        part, lines = SweepSummary(total=1), []
        with reporter.labelled(name, worker=number, transient=True):
            _one(config, name, device, runner, part, lines.append)
        try:
            conn.send((part, lines))
        except OSError:  # the sweep is gone
            return


def _die_with(parent: int) -> None:
    """Make this worker stop when the process ``parent`` (the sweep) ends, however it ends.

    SIGTERM raises ``SystemExit``, so that a run in progress unwinds and releases its claim; the
    kernel sends it when the parent dies (Linux), and a watchdog thread sends it when the
    parent's pid is no longer this process's parent (elsewhere), then exits hard if that did not
    end the process within ten seconds.
    """
    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)

    if os.getppid() != parent:  # the sweep died before the watch began
        os._exit(1)
    threading.Thread(target=watch, name="feasible-sweep-watchdog", daemon=True).start()


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


def _slurm_task() -> str | None:
    """The SLURM task this process runs in (``"<job>_<index>"`` or ``"<job>"``), else ``None``."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def _record_failure(config: Config, err: BaseException) -> str | None:
    """Write the failure record of ``config``: its error, traceback, time and SLURM job id
    (``None`` outside SLURM); return the error that prevented it, or ``None``."""
    path = failure_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": config.to_dict(), "error": repr(err),
                                    "traceback": traceback.format_exc(),
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "job": _slurm_task()}, indent=1))
    except OSError as write_err:
        return f"{path}: {type(write_err).__name__}: {write_err}"
    return None
