"""The SLURM launcher: its options and status without a cluster, then a real one-node SLURM.

The ``slurm`` tests start the daemons with ``tools/slurm-local.sh`` (installing Debian's
slurm-wlm and munge when root) and are skipped, with the reason, where they cannot start; they
stop the daemons they started. ``make test-slurm`` runs this file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feasible.__main__ import main
from feasible.experiment import Config, config_hash, read_record, record_path, run
from feasible.launch import LIVE_STATES, SlurmOptions, chunks, job_states, read_ledger, status
from feasible.paths import ROOT
from feasible.sweep import expand, failure_path, sweep

#: Six smoke configurations of a few seconds each: digits, MLP, 6 unlearning epochs.
GRID = {"fixed": {"scale": "smoke", "epochs": 6}, "methods": ["ft", "ga", "rl"],
        "addons": ["none", "and"]}
#: The one-node cluster of the tests: its own state folder and ports, stopped afterwards.
STATE = os.environ.get("FEASIBLE_SLURM_TEST_STATE", "/tmp/feasible-slurm-test")
PORT = "6937"


pytestmark = pytest.mark.usefixtures("isolated_dirs")


def _grid(tmp_path: Path, grid: dict = GRID) -> Path:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    return path


# ---- without a cluster -------------------------------------------------------------------------

def test_importing_feasible_and_the_cli_needs_no_submitit():
    code = ("import sys, feasible, feasible.sweep, feasible.experiment, feasible.__main__, "
            "feasible.launch; print('submitit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("values, message", [
    ({"cpus_per_task": 0}, "'cpus_per_task' option of the slurm launcher must be an int >= 1. "
                           "Got 0 instead."),
    ({"gpus_per_task": -1}, "'gpus_per_task' option of the slurm launcher must be an int >= 0"),
    ({"time_min": 1.5}, "'time_min' option of the slurm launcher must be an int >= 1. Got 1.5"),
    ({"chunk": True}, "'chunk' option of the slurm launcher must be an int >= 1. Got True"),
    ({"array_parallelism": 0}, "'array_parallelism' option"),
    ({"partition": "gpu; rm -rf"}, "must be a partition name"),
    ({"sbatch": ("account",)}, None),
    ({"sbatch": ("=x",)}, "must be key=value or a flag"),
    ({"sbatch": ("output=/tmp/x",)}, "'output' is set by the launcher itself"),
    ({"sbatch": ("--array=0-3",)}, "'array' is set by the launcher itself"),
])
def test_slurm_options_are_validated(values, message):
    if message is None:
        assert SlurmOptions(**values).extra_parameters() == {"account": True}
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        SlurmOptions(**values)


def test_extra_sbatch_options_become_submitits_additional_parameters():
    options = SlurmOptions(sbatch=("account=lab", "--qos=high", "exclusive", "mail_type=END"))
    assert options.extra_parameters() == {"account": "lab", "qos": "high", "exclusive": True,
                                          "mail-type": "END"}


def test_chunks_cover_the_configurations_in_order():
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks([], 2) == []


@pytest.mark.parametrize("argv, message", [
    (["--partition", "gpu"], "The '--partition' option needs '--launcher slurm'"),
    (["--chunk", "2"], "The '--chunk' option needs '--launcher slurm'"),
    (["--launcher", "slurm", "--jobs", "2"], "The '--jobs' option is the local runner's"),
    (["--launcher", "slurm", "--cpus-per-task", "0"],
     "The '--cpus-per-task' option must be an int >= 1. Got 0 instead."),
    (["--launcher", "slurm", "--time", "0"], "The '--time' option must be an int >= 1"),
    (["--launcher", "slurm", "--sbatch", "error=x"], "'error' is set by the launcher itself"),
    (["--launcher", "slurm", "--device", "gpu0"], "Unknown device 'gpu0'"),
])
def test_bad_cluster_options_are_clear_errors_before_anything_runs(argv, message, tmp_path,
                                                                     capsys, no_compute,
                                                                     monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # nothing may reach sbatch either
    assert main(["sweep", str(_grid(tmp_path)), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m feasible sweep: error: ") and message in err, err
    assert not (tmp_path / "results").exists()


def test_without_slurm_the_launcher_says_so(tmp_path, capsys, no_compute, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["sweep", str(_grid(tmp_path)), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "SLURM's 'sbatch' is not on the PATH" in err and "tools/slurm-local.sh" in err


def test_dry_run_lists_what_a_submission_would_send(tmp_path, capsys, no_compute):
    assert main(["sweep", str(_grid(tmp_path)), "--launcher", "slurm", "--chunk", "4",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 configurations: 0 recorded, 0 running, 0 queued; 6 to submit in 2 task(s)" in out


def _fail(config, **kwargs):
    raise RuntimeError("boom")


def test_a_failure_record_names_the_slurm_task(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    config = expand(GRID)[0]
    summary = sweep([config], progress=False, runner=_fail)
    assert summary.failed
    stored = json.loads(failure_path(config).read_text())
    assert stored["job"] == "41_3" and "RuntimeError: boom" in stored["traceback"]
    [row] = status([config])
    assert row.state == "failed" and "(job 41_3)" in row.detail


def test_status_without_a_cluster_reads_records_and_failures(tmp_path, capsys, no_compute):
    configs = expand(GRID)
    done = configs[1]
    record_path(done).parent.mkdir(parents=True)
    record_path(done).write_text(json.dumps({"hash": config_hash(done), "config": done.to_dict(),
                                             "final": {}}))
    assert main(["status", str(_grid(tmp_path)), "--log-folder", str(tmp_path / "logs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"done     {config_hash(done)}")
    assert sum(line.startswith("missing ") for line in lines) == 5
    assert lines[-2] == "6 configurations: 1 done, 0 running, 0 queued, 0 failed, 5 missing."
    assert lines[-1] == "Compute left: not estimated (no recorded run alike to time it by)."


# ---- a real one-node SLURM ---------------------------------------------------------------------

def _script(action: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FEASIBLE_SLURM_STATE=STATE, FEASIBLE_SLURM_PORT=PORT)
    return subprocess.run(["bash", str(ROOT / "tools" / "slurm-local.sh"), action], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cluster():
    """A one-node SLURM (``tools/slurm-local.sh``): its ``SLURM_CONF``; stopped if started here."""
    already = _script("status").returncode == 0
    if not already:
        started = _script("start")
        if started.returncode != 0:
            said = [line for line in started.stderr.splitlines() if "slurm-local:" in line]
            reason = (f"no SLURM: tools/slurm-local.sh start failed (exit "
                      f"{started.returncode}): {said[-1] if said else started.stderr[-300:]}")
            print(reason, file=sys.stderr)
            _script("stop")
            pytest.skip(reason)
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = f"{STATE}/slurm.conf"
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        if not already:
            _script("stop")


def _cli(capsys, *argv: str) -> str:
    """``python -m feasible ARGV`` (in this process: no second torch import); its output, echoed."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    with capsys.disabled():
        print(f"\n$ python -m feasible {' '.join(argv)}\n{out}{err}", end="")
    assert code == 0, err
    return out


def _until(predicate, seconds: float, what: str):
    """Poll ``predicate`` until it returns something true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)


@pytest.mark.slurm
def test_a_grid_on_slurm_survives_a_cancelled_task(cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEASIBLE_RESULTS", str(tmp_path / "warm-up"))
    run(Config(method="ft", scale="smoke", epochs=1))  # trains the shared models once
    monkeypatch.setenv("FEASIBLE_RESULTS", str(tmp_path / "results"))
    grid, logs = _grid(tmp_path), tmp_path / "logs"
    configs = expand(GRID)
    hashes = [config_hash(c) for c in configs]
    common = ["--launcher", "slurm", "--log-folder", str(logs), "--device", "cpu",
              "--time", "10"]

    out = _cli(capsys, "sweep", str(grid), *common, "--chunk", "3")
    assert "6 configurations: 0 recorded, 0 running, 0 queued; submitted 6 in job" in out
    [entry] = read_ledger(logs)
    tasks = {t["id"]: t["configs"] for t in entry["tasks"]}
    assert sorted(tasks) == [f"{entry['job']}_0", f"{entry['job']}_1"]
    assert tasks[f"{entry['job']}_0"] + tasks[f"{entry['job']}_1"] == hashes

    # cancel the second task while it computes the first of its three configurations
    victim = f"{entry['job']}_1"

    def computing():
        rows = [r for r in status(configs, logs) if r.hash == tasks[victim][0]]
        return rows[0] if rows[0].state == "running" else None

    row = _until(computing, 240, f"task {victim} computing a configuration")
    assert f"task {victim} RUNNING" in row.detail  # the claim and SLURM agree
    subprocess.run(["scancel", victim], check=True)
    with capsys.disabled():
        print(f"\n$ scancel {victim}   # while it computes {row.hash}")
    _until(lambda: all(job_states([entry["job"]]).get(t) not in (None, "COMPLETING", *LIVE_STATES)
                       for t in tasks), 240, "both tasks ending")
    states = job_states([entry["job"]])
    assert states[victim] == "CANCELLED" and states[f"{entry['job']}_0"] == "COMPLETED"

    out = _cli(capsys, "status", str(grid), "--log-folder", str(logs))
    rows = {r.hash: r for r in status(configs, logs)}
    for digest in tasks[f"{entry['job']}_0"]:
        assert rows[digest].state == "done"
    cancelled = [d for d in tasks[victim] if rows[d].state != "done"]
    assert cancelled, "the cancelled task finished its chunk first"
    assert "stopped by SIGTERM" in Path(rows[cancelled[0]].log).read_text()
    for digest in cancelled:
        assert rows[digest].state == "missing" and f"task {victim} CANCELLED" in rows[digest].detail
        assert f"missing  {digest}" in out
        assert read_record(record_path(configs[hashes.index(digest)])) == (None, None)
    for path in (tmp_path / "results" / "smoke").glob("*.json"):  # no partial record
        assert read_record(path)[0] is not None, path

    out = _cli(capsys, "sweep", str(grid), *common, "--chunk", "3")
    done = 6 - len(cancelled)
    assert (f"6 configurations: {done} recorded, 0 running, 0 queued; submitted "
            f"{len(cancelled)} in job") in out
    second = read_ledger(logs)[-1]
    assert [d for t in second["tasks"] for d in t["configs"]] == cancelled
    _until(lambda: all(r.state == "done" for r in status(configs, logs)), 240,
           "the resubmitted configurations finishing")
    _until(lambda: all(job_states([second["job"]]).get(t["id"]) == "COMPLETED"
                       for t in second["tasks"]), 120, "the resubmitted task ending")
    assert "nothing to submit" in _cli(capsys, "sweep", str(grid), *common)

    out = _cli(capsys, "status", str(grid), "--log-folder", str(logs))
    assert out.splitlines()[-1] == "6 configurations: 6 done, 0 running, 0 queued, 0 failed, " \
                                   "0 missing."
    folder = tmp_path / "results" / "smoke"
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(hashes)  # one record each
    assert all(read_record(p)[0] is not None for p in folder.glob("*.json"))
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob("*.corrupt*"))
    assert not (folder / "failed").exists()
    for task in second["tasks"]:
        assert "computed" in Path(task["log"]).read_text()  # the task's log is where status says


def test_time_left_uses_the_median_of_the_runs_alike(monkeypatch):
    import feasible.launch as launch

    def row(state, method, seed, protocol="harness"):
        config = Config(method=method, scale="smoke", seed=seed, protocol=protocol)
        return launch.ConfigStatus(config_hash(config), config, state, "")

    seconds = {("ft", 0): 10.0, ("ft", 1): 30.0, ("ft", 2): 20.0, ("ga", 0): 100.0}
    monkeypatch.setattr(launch, "_run_seconds", lambda c: seconds[(c.method, c.seed)])
    rows = [row("done", "ft", 0), row("done", "ft", 1), row("done", "ft", 2),
            row("done", "ga", 0),
            row("missing", "ft", 3),        # ft's median: 20
            row("running", "ga", 1),        # ga's: 100
            row("missing", "srl", 0),       # no srl: the protocol's median over ft and ga, 25
            row("failed", "ft", 5, protocol="authors")]  # nothing alike: not estimated
    done = [r.config for r in rows if r.state == "done"]
    assert launch.time_left(done, [r.config for r in rows[4:]]) == (145.0, 3, 1)
    lines = launch.status_lines(rows)
    assert lines[-1] == ("Compute left: about 2 min of one worker for 3 configuration(s), each "
                         "the median run time of the recorded runs alike; 1 with none alike not "
                         "estimated.")
