"""Sweeps with ``--jobs N`` worker processes: the same records, claims kept, no orphans, resumable."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feasible.__main__ import main
from feasible.experiment import (
    Config,
    compute_once,
    config_hash,
    read_record,
    record_path,
    without_timings,
)
from feasible.paths import ROOT
from feasible.sweep import expand, failure_path, label, sweep

#: Four smoke configurations: digits, MLP, one unlearning epoch each.
GRID = {"fixed": {"scale": "smoke", "epochs": 1}, "methods": ["ft", "ga"],
        "addons": ["none", "and"]}
#: Enough runs of a few unlearning epochs that a sweep can be killed between two records.
SLOW_GRID = {"fixed": {"scale": "smoke", "epochs": 3}, "methods": ["ft", "ga", "rl"],
             "addons": ["none", "and"]}


pytestmark = pytest.mark.usefixtures("isolated_dirs")


def _grid(tmp_path: Path, grid: dict = GRID) -> Path:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    return path


def _cli(tmp_path: Path, *args: str, results: str = "results", **popen) -> subprocess.Popen:
    """A real ``python -m feasible ...`` process (its own session), output in pipes."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), FEASIBLE_CACHE=str(tmp_path / "cache"),
               FEASIBLE_RESULTS=str(tmp_path / results), OMP_NUM_THREADS="1")
    env.pop("FEASIBLE_THREADS", None)
    return subprocess.Popen([sys.executable, "-m", "feasible", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _records(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".claim", ".tmp")))


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of the process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def test_jobs_two_gives_the_records_of_jobs_one(tmp_path, warm):
    """The same grid through ``--jobs 1`` and ``--jobs 2``: the same records but for timings."""
    grid = _grid(tmp_path)
    code, out, err = _finish(_cli(tmp_path, "sweep", str(grid), "--no-progress", results="one"))
    assert code == 0, err
    assert err == ""  # --no-progress: nothing on stderr
    code, out, err = _finish(_cli(tmp_path, "sweep", str(grid), "--jobs", "2", results="two"))
    assert code == 0, err
    assert "4 computed, 0 already recorded, 0 failed" in out
    one, two = (_records(tmp_path / name / "smoke") for name in ("one", "two"))
    assert sorted(one) == sorted(two) == sorted(config_hash(c) for c in expand(GRID))
    for digest in one:
        assert without_timings(one[digest]) == without_timings(two[digest]), digest
    assert _leftovers(tmp_path / "two" / "smoke") == []
    # progress on, stderr not a terminal: a line per phase naming worker and run, a line per run
    labels = {label(c) for c in expand(GRID)}
    phase_lines = re.findall(r"^\[feasible\] w([12]) (\S+): (.+?) \.\.\. done in", err, re.M)
    assert {run_label for _, run_label, _ in phase_lines} == labels, err
    assert {worker for worker, _, _ in phase_lines} <= {"1", "2"}
    for run_label in labels:
        phases = [p for _, name, p in phase_lines if name == run_label]
        assert phases == ["load data", "train original", "train retrained",
                          "evaluate references", "unlearn 1 epochs", "evaluate"], (run_label, err)
    tallies = re.findall(r"^\[feasible\] (\d)/4 runs in ", err, re.M)
    assert tallies == ["1", "2", "3", "4"], err


def test_jobs_from_python_with_a_failure_and_a_dying_worker(tmp_path, warm):
    """``sweep(jobs=2)``: failures are recorded, a worker that dies fails its run only."""
    configs = expand(GRID)
    summary = sweep(configs, jobs=2, progress=False, runner=flaky_runner)
    ga_none, ft_and = (next(c for c in configs if (c.method, c.addon) == pair)
                       for pair in (("ga", "none"), ("ft", "and")))
    failed = dict(summary.failed)
    assert set(failed) == {label(ga_none), label(ft_and)} and len(summary.done) == 2
    assert "RuntimeError: out of memory" in failed[label(ga_none)]
    assert "WorkerDiedError: worker" in failed[label(ft_and)] and "exit code 3" in failed[
        label(ft_and)]
    assert "out of memory" in json.loads(failure_path(ga_none).read_text())["traceback"]
    assert "died while computing it" in json.loads(failure_path(ft_and).read_text())["error"]
    summary = sweep(configs, jobs=2, progress=False)  # a rerun computes only the two failed
    assert sorted(summary.done) == sorted([label(ga_none), label(ft_and)])
    assert len(summary.skipped) == 2 and not summary.failed
    assert not failure_path(ga_none).exists() and not failure_path(ft_and).exists()
    assert _leftovers(record_path(ga_none).parent) == []


def flaky_runner(config: Config, **kwargs):
    """A runner for the workers (module level, so that it pickles): GA+none raises, FT+AND dies."""
    if (config.method, config.addon) == ("ga", "none"):
        raise RuntimeError("out of memory")
    if (config.method, config.addon) == ("ft", "and"):
        os._exit(3)
    return compute_once(config, **kwargs)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_killed_parallel_sweep_leaves_no_worker_and_resumes(tmp_path, warm):
    """SIGKILL of the sweep's process mid-way: its workers end, and a rerun finishes the grid."""
    grid = _grid(tmp_path, SLOW_GRID)
    hashes = sorted(config_hash(c) for c in expand(SLOW_GRID))
    folder = tmp_path / "results" / "smoke"
    first = _cli(tmp_path, "sweep", str(grid), "--jobs", "2", "--no-progress")
    deadline = time.monotonic() + 240
    try:
        while not (folder.is_dir() and any(folder.glob("*.json"))):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no record landed"
            time.sleep(0.05)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # the sweep's process only, not its group
        first.wait()
    done = sorted(p.stem for p in folder.glob("*.json"))
    assert 1 <= len(done) < len(hashes)
    deadline = time.monotonic() + 20
    while _group(first.pid):  # its workers (and multiprocessing's helpers) end by themselves
        assert time.monotonic() < deadline, f"orphans: {_group(first.pid)}"
        time.sleep(0.1)
    code, out, err = _finish(_cli(tmp_path, "sweep", str(grid), "--jobs", "2", "--no-progress"))
    assert code == 0, err
    again = [line.split()[1] for line in out.splitlines() if line.startswith("computed ")]
    assert sorted(again + done) == hashes  # each configuration computed exactly once in all
    records = sorted(folder.glob("*.json"))
    assert [p.stem for p in records] == hashes
    assert all(read_record(p)[0] is not None for p in records)
    assert _leftovers(folder) == [] and not (folder / "failed").exists()


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", ""])
def test_bad_jobs_are_clear_errors_before_anything_runs(value, tmp_path, capsys, no_compute):
    assert main(["sweep", str(_grid(tmp_path)), "--jobs", value]) == 2
    err = capsys.readouterr().err
    assert err == (f"python -m feasible sweep: error: The '--jobs' option must be an int >= 1 "
                   f"(worker processes). Got {value!r} instead.\n")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("jobs", [0, -2, 1.0, True, "2"])
def test_sweep_rejects_bad_jobs(jobs, no_compute):
    with pytest.raises(ValueError, match=re.escape(f"must be an int >= 1. Got {jobs!r} instead")):
        sweep(expand(GRID), jobs=jobs, progress=False)


def test_sweep_rejects_a_runner_workers_cannot_receive(no_compute):
    with pytest.raises(ValueError, match="'runner' parameter of sweep must be picklable"):
        sweep(expand(GRID), jobs=2, progress=False, runner=lambda config, **kw: None)


def test_bad_thread_count_is_an_error_before_anything_runs(monkeypatch, no_compute):
    monkeypatch.setenv("FEASIBLE_THREADS", "none")
    with pytest.raises(ValueError, match="FEASIBLE_THREADS must be an int >= 1.*'none'"):
        sweep(expand(GRID), jobs=2, progress=False)
