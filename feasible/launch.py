"""Sweeps on a SLURM cluster through submitit: submit a grid as one job array, follow it.

The local runner (:func:`feasible.sweep.sweep`) stays the default; this module is only imported
by ``python -m feasible sweep --launcher slurm`` and ``python -m feasible status``, and imports
``submitit`` only when it submits. Each array task runs its chunk of configurations with the
local runner itself (:func:`run_chunk`), so the records are the same atomic, idempotent,
claimed files (``feasible.experiment.run``), a configuration that raises is recorded under
``failed/`` with its traceback and the task's job id, and a task that the scheduler kills
(``scancel``, a time limit, a pre-emption) leaves no record of the configuration it was in: it
is submitted again by the next submission of the grid, which submits only what has no record,
is not being computed and is not queued.

References:
    submitit (facebookincubator/submitit): ``SlurmExecutor``, ``executor.batch()`` job arrays,
    ``submitit/slurm/slurm.py``. SLURM's ``sbatch``, ``squeue``, ``sacct`` and ``scancel``.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from feasible.experiment import Config, claim_owner, config_hash, read_record, record_path
from feasible.paths import ROOT, cache_dir, check_writable, results_dir

#: The launchers of ``python -m feasible sweep --launcher``.
LAUNCHERS: tuple[str, ...] = ("local", "slurm")
#: The sbatch options that submitit sets itself (the array, the logs, the signal), which
#: ``--sbatch`` may not override.
RESERVED_SBATCH: tuple[str, ...] = ("array", "output", "error", "open-mode", "signal", "wrap")
#: SLURM job states of a task that may still compute configurations (``squeue``'s long names);
#: not ``COMPLETING``, ``SIGNALING`` or ``STAGE_OUT``: a task in these is ending (a cancelled
#: one too), and what it has not computed is missing.
LIVE_STATES: tuple[str, ...] = ("PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "REQUEUE_HOLD",
                                "REQUEUE_FED", "RESIZING", "SUSPENDED", "RESV_DEL_HOLD",
                                "STOPPED")
#: The ledger of a log folder, one JSON line per submission (job id, tasks, configurations).
LEDGER: str = "submissions.jsonl"


@dataclass(frozen=True)
class SlurmOptions:
    """How a grid goes to SLURM: resources of each array task and where its logs go.

    Args:
        partition: the partition (``None``: the cluster's default).
        gpus_per_task: GPUs of each task, an int >= 0 (0: none requested).
        cpus_per_task: CPUs of each task, an int >= 1; its torch threads.
        time_min: the time limit of each task in minutes, an int >= 1 (a chunk must fit).
        array_parallelism: at most this many tasks of the array run at once, an int >= 1.
        chunk: configurations per task, an int >= 1, computed one after the other.
        sbatch: more sbatch options, ``"key=value"`` or ``"flag"`` (e.g. ``"account=lab"``,
            ``"qos=high"``, ``"exclusive"``); not those of :data:`RESERVED_SBATCH`.
        log_folder: submitit's folder (scripts, pickles, one log pair per task) and the ledger
            of submissions (``None``: ``<cache>/slurm``, see ``feasible.paths.cache_dir``). It
            must be on a file system that the nodes share, as must the results.
        job_name: the name of the job array.

    Raises:
        ValueError: a field outside its allowed values (the message names it and the value).
    """

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    time_min: int = 60
    array_parallelism: int = 64
    chunk: int = 1
    sbatch: tuple[str, ...] = ()
    log_folder: str | None = None
    job_name: str = "feasible"

    def __post_init__(self) -> None:
        for name, low in (("gpus_per_task", 0), ("cpus_per_task", 1), ("time_min", 1),
                          ("array_parallelism", 1), ("chunk", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"The '{name}' option of the slurm launcher must be an int >= "
                                 f"{low}. Got {value!r} instead.")
        if self.partition is not None and not re.fullmatch(r"[\w.,-]+", str(self.partition)):
            raise ValueError(f"The 'partition' option of the slurm launcher must be a partition "
                             f"name (letters, digits, '_', '-', '.', ','). Got "
                             f"{self.partition!r} instead.")
        if not re.fullmatch(r"[\w.-]+", str(self.job_name)):
            raise ValueError(f"The 'job_name' option of the slurm launcher must be letters, "
                             f"digits, '_', '-' or '.'. Got {self.job_name!r} instead.")
        object.__setattr__(self, "sbatch", tuple(self.sbatch))
        self.extra_parameters()  # validates sbatch

    def extra_parameters(self) -> dict[str, Any]:
        """The ``sbatch`` options as submitit's ``additional_parameters`` (``--key=value``).

        Raises:
            ValueError: an entry that is not ``key=value`` or ``flag``, or a reserved key.
        """
        out: dict[str, Any] = {}
        for entry in self.sbatch:
            key, sep, value = str(entry).lstrip("-").partition("=")
            key = key.strip().replace("_", "-")
            if not re.fullmatch(r"[a-z][a-z0-9-]*", key) or (sep and not value):
                raise ValueError(f"An 'sbatch' option of the slurm launcher must be key=value or "
                                 f"a flag, e.g. 'account=lab' or 'exclusive'. Got {entry!r} "
                                 f"instead.")
            if key in RESERVED_SBATCH:
                raise ValueError(f"The sbatch option {key!r} is set by the launcher itself (one "
                                 f"of {', '.join(RESERVED_SBATCH)}); use the launcher's options "
                                 f"(--array-parallelism, --log-folder) instead.")
            out[key] = value if sep else True
        return out

    def folder(self) -> Path:
        """The log folder (see ``log_folder``), absolute."""
        return log_folder(self.log_folder)


def log_folder(path: str | os.PathLike[str] | None = None) -> Path:
    """The launcher's log folder: ``path``, or ``<cache>/slurm`` by default; absolute."""
    return Path(path).expanduser().absolute() if path is not None else cache_dir() / "slurm"


@dataclass
class Submission:
    """What a submission did.

    Attributes:
        total: the configurations given.
        done: hashes of those already recorded.
        running: hashes of those a live process computes (a claim).
        queued: hashes of those a task of an earlier submission will compute (pending or
            running, per ``squeue``).
        submitted: the tasks submitted, each a list of hashes, in array order.
        job_id: the array's job id (``None``: nothing submitted, or a dry run).
        task_ids: the job id of each task (``"<job>_<index>"``; a one-task submission is a
            plain job, ``"<job>"``).
        folder: the log folder.
    """

    total: int
    done: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    submitted: list[list[str]] = field(default_factory=list)
    job_id: str | None = None
    task_ids: list[str] = field(default_factory=list)
    folder: Path | None = None

    def lines(self) -> list[str]:
        """The submission as text lines."""
        count = sum(len(task) for task in self.submitted)
        head = (f"{self.total} configurations: {len(self.done)} recorded, {len(self.running)} "
                f"running, {len(self.queued)} queued; ")
        if self.job_id is None:
            return [head + (f"{count} to submit in {len(self.submitted)} task(s) (dry run)."
                            if count else "nothing to submit.")]
        out = [head + f"submitted {count} in job {self.job_id} ({len(self.submitted)} task(s))."]
        for task, hashes in zip(self.task_ids, self.submitted):
            out.append(f"task {task}: {' '.join(hashes)}")
        out.append(f"logs: {self.folder}/<task>_0_log.out and .err; follow with "
                   f"'python -m feasible status GRID'.")
        return out


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` cut into consecutive lists of ``size`` (the last may be shorter)."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def submit(configs: Iterable[Config], options: SlurmOptions, *, device: str | None = None,
           limit: int | None = None, dry_run: bool = False) -> Submission:
    """Submit the configurations that have no record yet as one SLURM job array.

    A configuration is left out when it has a finished record, when a live process computes it
    (its claim), or when a task of an earlier submission in the same log folder is pending or
    running with it (``squeue``). The rest go in chunks of ``options.chunk`` configurations, one
    array task each, at most ``options.array_parallelism`` at once; each task runs
    :func:`run_chunk`. The submission is appended to the log folder's ledger (:data:`LEDGER`),
    which :func:`status` reads.

    Args:
        configs: the configurations (e.g. ``feasible.sweep.expand`` of a grid).
        options: the task's resources and the log folder.
        device: where each task computes (``None``: CUDA when the node has it, else the CPU).
        limit: submit at most this many configurations.
        dry_run: say what would be submitted; submit nothing.

    Returns:
        A :class:`Submission`.

    Raises:
        ValueError: bad ``options`` or ``limit``, or a device name torch does not know.
        RuntimeError: SLURM's ``sbatch`` or ``srun`` is not on the ``PATH``, ``submitit`` is not
            installed, or ``sbatch`` refused the job (its message).
        OSError: the results or log folder cannot be written.
    """
    if not isinstance(options, SlurmOptions):
        raise ValueError(f"The 'options' parameter of submit must be a SlurmOptions. Got "
                         f"{type(options).__name__} instead.")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"The 'limit' parameter of submit must be None or an int >= 0. Got "
                         f"{limit!r} instead.")
    _check_device_name(device)
    configs = list(configs)
    folder = options.folder()
    out = Submission(total=len(configs), folder=folder)
    live = {digest: task for digest, (task, state) in _latest_tasks(folder).items()
            if state in LIVE_STATES}
    todo = []
    for config in configs:
        digest, path = config_hash(config), record_path(config)
        if read_record(path)[0] is not None:
            out.done.append(digest)
        elif claim_owner(path) is not None:
            out.running.append(digest)
        elif digest in live:
            out.queued.append(digest)
        else:
            todo.append(config)
    if limit is not None:
        todo = todo[:limit]
    out.submitted = [[config_hash(c) for c in part] for part in chunks(todo, options.chunk)]
    if dry_run or not todo:
        return out
    for scale in sorted({config.scale for config in todo}):
        check_writable(results_dir() / scale)
    check_writable(folder)
    executor = _executor(options, folder)
    results = str(results_dir().absolute())
    cache = os.environ.get("FEASIBLE_CACHE")
    cache = str(Path(cache).absolute()) if cache else None
    try:
        with executor.batch():
            jobs = [executor.submit(run_chunk, part, device, results, cache)
                    for part in chunks(todo, options.chunk)]
    except Exception as err:  # submitit's FailedJobError, sbatch's CalledProcessError, ...
        raise RuntimeError(f"sbatch refused the job array: {type(err).__name__}: {err}") from None
    out.task_ids = [str(job.job_id) for job in jobs]
    out.job_id = out.task_ids[0].split("_")[0]
    _append_ledger(folder, {
        "job": out.job_id, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results,
        "tasks": [{"id": task, "configs": hashes, "log": str(_task_log(folder, task))}
                  for task, hashes in zip(out.task_ids, out.submitted)]})
    return out


def _check_device_name(device: Any) -> None:
    """A device name torch knows (its availability is the node's to check)."""
    if device is None:
        return
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"Unknown device {device!r}; expected 'cpu', 'cuda', 'cuda:N' or "
                         f"'mps' (or none: CUDA when the node has it).") from None


def _executor(options: SlurmOptions, folder: Path) -> Any:
    """A submitit ``SlurmExecutor`` set up from ``options`` (checked before any sbatch)."""
    for tool in ("sbatch", "srun"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"SLURM's '{tool}' is not on the PATH: the slurm launcher needs a "
                               f"SLURM cluster (tools/slurm-local.sh starts a one-node one "
                               f"here), or use the local runner (no --launcher).")
    try:
        import submitit
    except ImportError:
        raise RuntimeError("The slurm launcher needs the 'submitit' package (pinned in "
                           "requirements.lock; run tools/env.sh).") from None
    executor = submitit.SlurmExecutor(folder=folder, python=shlex.quote(sys.executable))
    parameters: dict[str, Any] = dict(
        job_name=options.job_name, time=options.time_min, cpus_per_task=options.cpus_per_task,
        array_parallelism=options.array_parallelism,
        # the nodes import this clone's feasible, and compute with the task's CPUs
        setup=[f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
               f"export OMP_NUM_THREADS={options.cpus_per_task}"],
    )
    if options.partition is not None:
        parameters["partition"] = options.partition
    if options.gpus_per_task:
        parameters["gpus_per_task"] = options.gpus_per_task
    extra = options.extra_parameters()
    if extra:
        parameters["additional_parameters"] = extra
    executor.update_parameters(**parameters)
    return executor


def run_chunk(configs: Sequence[Config], device: str | None = None, results: str | None = None,
              cache: str | None = None) -> list[str]:
    """What one array task runs: the local sweep over its configurations, in this process.

    Records, claims and failure records are the local runner's (``feasible.sweep.sweep``); a
    failure record carries this task's job id (``SLURM_ARRAY_JOB_ID``/``SLURM_ARRAY_TASK_ID``).

    Args:
        configs: the task's configurations.
        device: where to compute (``None``: CUDA when available, else the CPU).
        results: the results folder of the submission (sets ``FEASIBLE_RESULTS``).
        cache: the cache folder of the submission, if it set one (sets ``FEASIBLE_CACHE``).

    Returns:
        The sweep summary's lines (submitit keeps them in the task's result file).
    """
    import torch

    from feasible import progress
    from feasible.sweep import sweep

    if results is not None:
        os.environ["FEASIBLE_RESULTS"] = results
    if cache is not None:
        os.environ["FEASIBLE_CACHE"] = cache
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        torch.set_num_threads(int(cpus))
    progress.enable(True)  # one line per phase into the task's log
    _stop_on_signals()
    summary = sweep(configs, device=device, progress=True)
    lines = summary.lines()
    for line in lines:
        print(line, flush=True)
    return lines


def _stop_on_signals() -> None:
    """Make SLURM's SIGTERM (``scancel``, pre-emption) and submitit's SIGUSR2 (the time limit is
    near) stop the task at once, leaving no record of the configuration it was in.

    submitit ignores SIGTERM (the task would compute on until SIGKILL, ``KillWait`` later) and
    turns SIGUSR2 into an exception that the sweep would record as that configuration's failure.
    Raising ``SystemExit`` instead unwinds the run: its claim is released, nothing is written,
    and the next submission of the grid sends the configuration again.
    """
    def stop(signum: int, frame: Any) -> None:
        del frame
        print(f"[feasible] task stopped by {signal.Signals(signum).name}; the configuration "
              f"it was computing has no record and goes with the next submission", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR2, stop)


def _task_log(folder: Path, task: str) -> Path:
    """The standard output of ``task`` (submitit's ``<task>_0_log.out``; ``.err`` beside it)."""
    return folder / f"{task}_0_log.out"


def _append_ledger(folder: Path, entry: dict[str, Any]) -> None:
    with open(folder / LEDGER, "a") as file:
        file.write(json.dumps(entry) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_ledger(folder: Path) -> list[dict[str, Any]]:
    """The submissions recorded in the log folder ``folder``, oldest first (none: ``[]``)."""
    try:
        text = (Path(folder) / LEDGER).read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash: the others still count
            continue
        if isinstance(entry, dict) and isinstance(entry.get("tasks"), list):
            entries.append(entry)
    return entries


def job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The SLURM state of each task of the jobs ``job_ids``: ``{"<job>_<index>": "RUNNING"}``.

    From ``squeue --states=all --array`` (pending, running and recently ended tasks), then
    ``sacct`` for those it no longer shows, where the cluster keeps accounting. Tasks that
    neither knows are absent; so is everything when SLURM's commands are not installed.
    """
    wanted = {str(j) for j in job_ids}
    if not wanted:
        return {}
    states: dict[str, str] = {}
    text = _quiet(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"])
    for line in text.splitlines():
        task, _, state = line.strip().partition("|")
        if task.split("_")[0] in wanted and state:
            states[task] = state.split()[0]
    unseen = sorted(j for j in wanted if not any(t.split("_")[0] == j for t in states))
    if unseen:
        text = _quiet(["sacct", "--noheader", "--parsable2", "--allocations",
                       "--format=JobID,State", "--jobs", ",".join(unseen)])
        for line in text.splitlines():
            task, _, state = line.strip().partition("|")
            if task.split("_")[0] in wanted and state and "[" not in task:
                states[task] = state.split()[0]
    return states


def _quiet(command: list[str]) -> str:
    """The standard output of ``command``, or ``""`` when it is missing or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _latest_tasks(folder: Path) -> dict[str, tuple[str, str]]:
    """Per configuration hash, its latest task in the ledger and that task's state
    (``"UNKNOWN"`` when SLURM no longer knows it)."""
    ledger = read_ledger(folder)
    states = job_states(entry["job"] for entry in ledger)
    latest: dict[str, tuple[str, str]] = {}
    for entry in ledger:
        for task in entry["tasks"]:
            for digest in task.get("configs", []):
                latest[digest] = (task["id"], states.get(task["id"], "UNKNOWN"))
    return latest


@dataclass(frozen=True)
class ConfigStatus:
    """Where one configuration of a grid stands.

    Attributes:
        hash: its hash.
        config: the configuration.
        state: ``"done"`` (a finished record), ``"running"`` (a live process computes it),
            ``"queued"`` (a pending or running task will compute it), ``"failed"`` (its last run
            raised: ``failed/<hash>.json``), or ``"missing"`` (none of these; a submission
            sends it).
        detail: the evidence: the record, the claim's holder, the task and its SLURM state, the
            error.
        task: its latest task in the log folder's ledger, if any.
        log: that task's standard output, if any.
    """

    hash: str
    config: Config
    state: str
    detail: str
    task: str | None = None
    log: str | None = None


#: The states of :class:`ConfigStatus`, in the order ``status`` counts them.
STATES: tuple[str, ...] = ("done", "running", "queued", "failed", "missing")


def status(configs: Iterable[Config], folder: str | os.PathLike[str] | None = None
           ) -> list[ConfigStatus]:
    """Where each configuration stands, from records, claims, failure records and SLURM.

    Args:
        configs: the configurations.
        folder: the launcher's log folder (``None``: :func:`log_folder`'s default).

    Returns:
        One :class:`ConfigStatus` per configuration, in order.
    """
    from feasible.sweep import failure_path

    folder = log_folder(folder)
    ledger = read_ledger(folder)
    logs = {task["id"]: task.get("log") for entry in ledger for task in entry["tasks"]}
    latest = _latest_tasks(folder)
    out = []
    for config in configs:
        digest, path = config_hash(config), record_path(config)
        task, state = latest.get(digest, (None, None))
        where = f"task {task} {state}" if task else "never submitted from this log folder"
        log = logs.get(task) if task else None
        record, problem = read_record(path)
        owner = claim_owner(path) if record is None else None
        failure = _failure(failure_path(config))
        if record is not None:
            row = ("done", str(path))
        elif owner is not None:
            row = ("running", f"process {owner.get('pid')} on {owner.get('host')}; {where}")
        elif state in LIVE_STATES:
            row = ("queued", where)
        elif failure is not None:
            row = ("failed", f"{failure}; {where}")
        else:
            row = ("missing", where + (f"; the record file is {problem}" if problem else ""))
        out.append(ConfigStatus(digest, config, row[0], row[1], task, log))
    return out


def _failure(path: Path) -> str | None:
    """The error of a failure record, with the job it ran in; ``None`` when there is none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    job = f" (job {data['job']})" if data.get("job") else ""
    error = str(data.get("error", "an error")).split("\\n")[0]  # the repr's first line
    if len(error) > 160:
        error = error[:157] + "..."
    return f"{error}{job}, traceback in {path}"


def _run_seconds(config: Config) -> float | None:
    """The whole run's wall seconds of a configuration, from its record (``None``: none)."""
    record, _ = read_record(record_path(config))
    seconds = ((record or {}).get("timings") or {}).get("total_s")
    return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None


def time_left(done: Iterable[Config], left: Iterable[Config]) -> tuple[float, int, int]:
    """The compute the configurations ``left`` will take, estimated from the ``done`` ones.

    Each is estimated by the median whole-run time of the done configurations alike: the same
    scale, dataset, model, protocol and method, else the same without the method; one with none
    alike is not estimated. The times are the records' wall-clock seconds, so they carry the
    load of the machine that made them.

    Returns:
        ``(seconds, estimated, not_estimated)``: the sum over the estimated configurations, and
        how many were and were not.
    """
    def keys(c: Config) -> tuple[tuple, tuple]:
        alike = (c.scale, c.dataset, c.model, c.protocol)
        return alike + (c.method,), alike

    seen: dict[tuple, list[float]] = {}
    for config in done:
        if (seconds := _run_seconds(config)) is not None:
            for key in keys(config):
                seen.setdefault(key, []).append(seconds)
    total, estimated, unknown = 0.0, 0, 0
    for config in left:
        times = next((seen[k] for k in keys(config) if k in seen), None)
        if times is None:
            unknown += 1
        else:
            total, estimated = total + statistics.median(times), estimated + 1
    return total, estimated, unknown


def status_lines(rows: Sequence[ConfigStatus]) -> list[str]:
    """:func:`status` as text: one line per configuration, the counts, and the compute left
    (:func:`time_left`)."""
    from feasible.sweep import label

    out = [f"{row.state:8s} {row.hash}  {label(row.config)}  [{row.detail}]"
           + (f" log {row.log}" if row.log and row.state != "done" else "") for row in rows]
    counts = {state: sum(row.state == state for row in rows) for state in STATES}
    out.append(f"{len(rows)} configurations: " + ", ".join(f"{n} {s}" for s, n in counts.items())
               + ".")
    seconds, estimated, unknown = time_left([r.config for r in rows if r.state == "done"],
                                            [r.config for r in rows if r.state != "done"])
    if estimated:
        amount = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
        line = (f"Compute left: about {amount} of one worker for {estimated} "
                "configuration(s), each the median run time of the recorded runs alike")
        out.append(line + (f"; {unknown} with none alike not estimated." if unknown else "."))
    elif unknown:
        out.append("Compute left: not estimated (no recorded run alike to time it by).")
    return out
