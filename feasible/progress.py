"""Progress of long work by phase: a bar with a time estimate on a terminal, one line in logs.

A run is a few phases (load the data, train the original and the retrained models, evaluate them,
unlearn epoch by epoch, evaluate). Each is wrapped in :func:`phase`::

    from feasible import progress

    with progress.phase("unlearn 30 epochs", total=30) as step:
        for epoch in range(30):
            ...
            step.advance()

When standard error is a terminal, a phase is a tqdm bar with its elapsed time and an estimate of
the time left (from the steps advanced so far; none without ``total``). Otherwise (a log file, CI,
a notebook's captured output) a phase prints exactly one plain line when it ends::

    [feasible] cifar10/resnet18/random0.1/srl+focus/seed0: unlearn 30 epochs ... done in 41.2 s

Progress is off unless asked for, so that library calls (a notebook calling
``feasible.experiment.run``) stay silent: ``python -m feasible run|sweep`` turns it on
(``--no-progress`` keeps it off), :func:`enable` turns it on or off in a program, and the
environment variable ``FEASIBLE_PROGRESS`` (``1`` or ``0``) overrides both. A phase given
``quiet=True`` says nothing whatever the setting.

:func:`labelled` names the run (and, in a sweep with ``--jobs N``, the worker) that the phases
inside it belong to.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import IO, Any, ContextManager, Iterator

#: The environment variable that turns progress on (``1``) or off (``0``) over :func:`enable`.
ENV: str = "FEASIBLE_PROGRESS"
#: How plain lines start.
TAG: str = "[feasible]"

_ON_WORDS = ("1", "true", "yes", "on")
_OFF_WORDS = ("0", "false", "no", "off")
_state: dict[str, Any] = {"enabled": False, "run": None, "worker": None, "transient": False}


def enable(on: bool = True) -> bool:
    """Turn progress reports on or off for this process (``FEASIBLE_PROGRESS`` still wins).

    Args:
        on: report (``True``) or stay silent (``False``).

    Returns:
        The previous setting, to restore it.
    """
    previous = _state["enabled"]
    _state["enabled"] = bool(on)
    return previous


def enabled() -> bool:
    """Whether phases are reported: ``FEASIBLE_PROGRESS`` if set, else the :func:`enable` setting.

    Raises:
        ValueError: ``FEASIBLE_PROGRESS`` is set to something other than 1/0 (or
            true/false, yes/no, on/off).
    """
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return bool(_state["enabled"])
    if value in _ON_WORDS:
        return True
    if value in _OFF_WORDS:
        return False
    raise ValueError(f"{ENV} must be 1 or 0 (or true/false, yes/no, on/off). Got "
                     f"{os.environ[ENV]!r} instead.")


@contextmanager
def labelled(run: str | None, *, worker: int | None = None,
             transient: bool = False) -> Iterator[None]:
    """Name the run, and the worker, of the phases inside this block.

    Args:
        run: the run's name (e.g. ``feasible.sweep.label(config)``), or ``None``.
        worker: the worker's number (1, 2, ...) in a sweep with several worker processes: lines
            start with ``w<number>`` and a terminal bar takes row ``<number>`` under the sweep's.
        transient: on a terminal, remove each phase's bar when it ends (a sweep's runs) instead
            of leaving it.
    """
    saved = dict(_state)
    _state.update(run=run, worker=worker, transient=transient)
    try:
        yield
    finally:
        _state.update({k: saved[k] for k in ("run", "worker", "transient")})


class Phase:
    """One phase in progress; :func:`phase` yields it.

    Attributes:
        label: what the phase does, e.g. ``"train original"``.
        total: the steps it will take, or ``None`` when unknown.
        count: the steps advanced so far.
        note: text added to the end-of-phase line (e.g. ``"loaded from the cache"``).
    """

    def __init__(self, label: str, total: int | None, bar: Any = None) -> None:
        self.label, self.total, self.count, self.note = label, total, 0, ""
        self._bar = bar
        self._start = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more steps done."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    @property
    def elapsed(self) -> float:
        """Seconds since the phase began."""
        return time.perf_counter() - self._start


def phase(label: str, total: int | None = None, *, quiet: bool | None = None,
          stream: IO[str] | None = None) -> ContextManager[Phase]:
    """A context manager that reports one phase of work and yields its :class:`Phase`.

    On a terminal, a tqdm bar (elapsed time, steps, and the time left when ``total`` is given);
    elsewhere one line at the end, ``[feasible] <worker> <run>: <label> ... done in 1.2 s``
    (``failed after`` or ``interrupted after`` when the block raised; the steps done when fewer
    than ``total``; the phase's ``note`` in brackets). Nothing at all when progress is off
    (:func:`enabled`) or ``quiet``.

    Args:
        label: what the phase does.
        total: the steps it will take (``Phase.advance`` counts them), or ``None``.
        quiet: ``True``: report nothing; ``False``: report even when progress is off;
            ``None``: as :func:`enabled` says.
        stream: where to write (``None``: ``sys.stderr`` at the time of the call).
    """
    return _PhaseContext(label, total, quiet, stream)


class _PhaseContext:
    def __init__(self, label: str, total: int | None, quiet: bool | None,
                 stream: IO[str] | None) -> None:
        self.label, self.total, self.quiet, self.stream = label, total, quiet, stream
        self.phase: Phase | None = None

    def __enter__(self) -> Phase:
        show = enabled() if self.quiet is None else not self.quiet
        stream = self.stream if self.stream is not None else sys.stderr
        self._stream = stream if show else None
        bar = None
        if show and _is_terminal(stream):
            from tqdm.auto import tqdm

            worker = _state["worker"]
            bar = tqdm(total=self.total, desc=_prefix() + self.label, file=stream,
                       position=worker, leave=not (_state["transient"] or worker is not None),
                       dynamic_ncols=True, unit="step")
        self.phase = Phase(self.label, self.total, bar)
        return self.phase

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        phase, stream = self.phase, self._stream
        if phase._bar is not None:
            if phase.note:
                phase._bar.set_postfix_str(phase.note, refresh=True)
            phase._bar.close()
        elif stream is not None:
            try:
                stream.write(line(phase, error) + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed stream: progress is not worth a crash
                pass


def line(phase: Phase, error: BaseException | None = None) -> str:
    """The plain end-of-phase line of ``phase`` (what logs get), with the current run's name."""
    if error is None:
        outcome = f"done in {phase.elapsed:.1f} s"
    elif isinstance(error, (KeyboardInterrupt, SystemExit)):
        outcome = f"interrupted after {phase.elapsed:.1f} s"
    else:
        outcome = f"failed after {phase.elapsed:.1f} s ({type(error).__name__})"
    notes = [phase.note] if phase.note else []
    if phase.total is not None and 0 < phase.count < phase.total:  # stopped early
        notes.insert(0, f"{phase.count}/{phase.total}")
    extra = f" ({'; '.join(notes)})" if notes else ""
    return f"{TAG} {_prefix()}{phase.label} ... {outcome}{extra}"


def tally(done: int, total: int, elapsed: float, what: str = "runs") -> str:
    """A plain line of overall progress: ``[feasible] 3/30 runs in 1m 20s, about 12m 0s left``."""
    left = ""
    if 0 < done < total:
        left = f", about {_duration(elapsed / done * (total - done))} left"
    return f"{TAG} {done}/{total} {what} in {_duration(elapsed)}{left}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _prefix() -> str:
    worker, run = _state["worker"], _state["run"]
    head = " ".join(part for part in (f"w{worker}" if worker is not None else "", run or "")
                    if part)
    return f"{head}: " if head else ""


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
