"""Faults of records, results folders, claims, devices and grid files, with real processes.

Each test names the fault, provokes it for real (a truncated record, a folder that cannot be
written, a process killed with SIGKILL, two sweeps at once, a device this machine lacks, a broken
grid file) and checks the behaviour: a clear error before any computation, or a recovery that
computes every configuration exactly once.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import feasible.experiment
from feasible._validate import resolve_device
from feasible.__main__ import main
from feasible.experiment import (
    ClaimedError,
    Config,
    claim,
    claim_owner,
    claim_path,
    compute_once,
    config_hash,
    read_record,
    record_path,
    run,
)
from feasible.paths import ROOT, NotWritableError, check_writable
from feasible.sweep import expand, failure_path, load_grid, sweep

SMOKE = dict(scale="smoke", epochs=1)
#: Six smoke configurations: digits, MLP, one unlearning epoch each.
GRID = {"fixed": {"scale": "smoke", "epochs": 1}, "methods": ["ft", "ga", "srl"],
        "addons": ["none", "and"]}
#: A process that holds the claim of a record (argv[1]) for argv[2] seconds, then releases it.
HOLDER = ("import sys, time\nfrom pathlib import Path\nfrom feasible.experiment import claim\n"
          "c = claim(Path(sys.argv[1]))\nprint('held', flush=True)\ntime.sleep(float(sys.argv[2]))\n"
          "c.release()\n")
NO_CUDA = not torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("isolated_dirs")


def _grid(tmp_path: Path, grid: dict = GRID) -> Path:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), FEASIBLE_CACHE=str(tmp_path / "cache"),
                FEASIBLE_RESULTS=str(tmp_path / "results"), OMP_NUM_THREADS="1")


def _start(tmp_path: Path, *args: str, code: str | None = None) -> subprocess.Popen:
    """A real ``python -m feasible ...`` (or ``python -c code``) process, output in pipes."""
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "feasible",
                                                                *args]
    return subprocess.Popen(command, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _wait_for(condition, timeout: float = 120, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _holder(tmp_path: Path, record: Path, seconds: float) -> subprocess.Popen:
    """A live process holding the claim of ``record``, once it has printed 'held'."""
    process = _start(tmp_path, str(record), str(seconds), code=HOLDER)
    assert process.stdout.readline().strip() == "held", process.stderr.read()
    return process


def _records(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "results" / "smoke").glob("*.json"))


def _leftovers(tmp_path: Path) -> list[str]:
    folder = tmp_path / "results" / "smoke"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".claim", ".tmp")))


def _computed(out: str) -> list[str]:
    """The hashes a sweep's output says it computed."""
    return [line.split()[1] for line in out.splitlines() if line.startswith("computed ")]


# --- 1. a record is finished only if it parses and its hash matches its name -------------------

def _fake_record(config: Config, **changes) -> dict:
    return {"hash": config_hash(config), "config": config.to_dict(), "final": {}, **changes}


@pytest.mark.parametrize("damage, words", [
    (lambda text, rec: text[: len(text) // 2], "not valid JSON"),
    (lambda text, rec: "", "not valid JSON"),
    (lambda text, rec: "[1, 2]", "a JSON list, not an object"),
    (lambda text, rec: json.dumps({**rec, "hash": "0" * 16}), "stored with hash '0000000000000000'"),
    (lambda text, rec: json.dumps({**rec, "config": {**rec["config"], "seed": 5}}),
     "a record of configuration"),
    (lambda text, rec: json.dumps({**rec, "config": ["ft"]}), "without a configuration"),
    (lambda text, rec: json.dumps({k: v for k, v in rec.items() if k != "final"}),
     "without final metrics"),
])
def test_read_record_accepts_only_finished_records(damage, words):
    config = Config(method="ft", **SMOKE)
    path = record_path(config)
    path.parent.mkdir(parents=True)
    record = _fake_record(config)
    path.write_text(json.dumps(record))
    assert read_record(path) == (record, None)
    path.write_text(damage(json.dumps(record), record))
    found, problem = read_record(path)
    assert found is None and words in problem
    older = {**record, "config": {**record["config"], "renamed_since": 1}}  # an older version's
    path.write_text(json.dumps(older))
    assert read_record(path) == (older, None)
    path.write_bytes(b"\xff\xfe not text")
    assert "unreadable" in read_record(path)[1]
    path.unlink()
    assert read_record(path) == (None, None)


def test_run_recomputes_a_truncated_record_and_keeps_it_aside(warm):
    """Before: ``run`` failed with a bare JSONDecodeError on a truncated record, forever."""
    config = Config(method="ft", **SMOKE)
    record = run(config)
    path = record_path(config)
    text = path.read_text()
    path.write_text(text[:200])  # a record cut short by a full disk or a crash
    with pytest.warns(UserWarning, match=re.escape(f"The record {path} is not valid JSON") +
                      ".*" + re.escape(f"moved it to {path.name}.corrupt and computing")):
        again = run(config)
    assert again["hash"] == record["hash"] and read_record(path)[0] == again
    assert (path.parent / f"{path.name}.corrupt").read_text() == text[:200]
    path.write_text("{")  # a second broken record does not overwrite the first one set aside
    with pytest.warns(UserWarning, match=re.escape(f"{path.name}.corrupt.1")):
        run(config)
    assert (path.parent / f"{path.name}.corrupt").read_text() == text[:200]
    assert (path.parent / f"{path.name}.corrupt.1").read_text() == "{"


def test_sweep_recomputes_a_truncated_record(tmp_path, capsys, warm):
    """Before: a truncated record counted as done forever."""
    grid = _grid(tmp_path, {**GRID, "methods": ["ft"]})
    assert main(["sweep", str(grid), "--no-progress"]) == 0
    first, second = _records(tmp_path)
    first.write_text(first.read_text()[:100])
    capsys.readouterr()
    assert main(["sweep", str(grid), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"broken    {first.name}" in out and f"recorded  {second.name}" in out
    with pytest.warns(UserWarning, match=re.escape(f"The record {first} is not valid JSON")):
        assert main(["sweep", str(grid), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 computed, 1 already recorded, 0 failed" in out
    assert _computed(out) == [first.stem]
    assert read_record(first)[0] is not None and (first.parent / f"{first.name}.corrupt").exists()


# --- 2. the results folder is checked before any computation -----------------------------------

def test_unwritable_results_folder_fails_run_and_sweep_before_computing(tmp_path, monkeypatch,
                                                                         capsys, no_compute):
    """Before: the run computed for its whole length, then lost its record to a PermissionError,
    and a sweep stopped at its first configuration. Root ignores permissions, so the folder is
    made unwritable by putting it under a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FEASIBLE_RESULTS", str(blocker / "results"))
    run_args = ["run", "--scale", "smoke", "--method", "ft", "--epochs", "1"]
    for args in (run_args, ["sweep", str(_grid(tmp_path)), "--no-progress"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"The folder {blocker / 'results' / 'smoke'} is not writable: Not a directory" in err
        assert "Set FEASIBLE_RESULTS to a writable folder" in err and "Traceback" not in err
    with pytest.raises(NotWritableError, match="FEASIBLE_RESULTS"):
        run(Config(method="ft", **SMOKE))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_folder_fails_before_computing(tmp_path, monkeypatch, capsys,
                                                         no_compute):
    folder = tmp_path / "results" / "smoke"
    folder.mkdir(parents=True)
    folder.chmod(0o500)
    try:
        assert main(["sweep", str(_grid(tmp_path)), "--no-progress"]) == 2
        assert f"The folder {folder} is not writable: Permission denied" in capsys.readouterr().err
    finally:
        folder.chmod(0o700)


def test_unwritable_results_folder_in_a_real_process(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = dict(_env(tmp_path), FEASIBLE_RESULTS=str(blocker))
    done = subprocess.run([sys.executable, "-m", "feasible", "run", "--scale", "smoke", "--method",
                           "ft"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "python -m feasible run: error: The folder" in done.stderr
    assert not (tmp_path / "cache" / "checkpoints").exists()  # nothing trained


def test_check_writable_writes_no_trace(tmp_path):
    assert check_writable(tmp_path / "new" / "folder") == tmp_path / "new" / "folder"
    assert list((tmp_path / "new" / "folder").iterdir()) == []


def test_a_failure_record_that_cannot_be_written_does_not_stop_the_sweep(tmp_path):
    configs = expand(GRID)
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    (tmp_path / "results" / "smoke" / "failed").write_text("a file where the folder goes")

    def runner(config, **kwargs):
        if config.method == "ga":
            raise RuntimeError("out of memory")
        return {}, True

    summary = sweep(configs, runner=runner, progress=False)
    assert len(summary.done) == 4 and len(summary.failed) == 2 and len(summary.unrecorded) == 2
    lines = summary.lines()
    assert sum(line.startswith("NOT RECORDED the failure of digits/mlp/random0.1/ga")
               for line in lines) == 2
    assert str(failure_path(configs[2])) in "\n".join(lines)


# --- 3. claims: no configuration computed twice ------------------------------------------------

def test_a_claim_is_exclusive_until_released(tmp_path):
    path = tmp_path / "results" / "smoke" / "0123456789abcdef.json"
    path.parent.mkdir(parents=True)
    held = claim(path)
    assert claim_owner(path)["pid"] == os.getpid()
    with pytest.raises(ClaimedError, match=f"process {os.getpid()} on "):
        claim(path)
    held.release()
    assert not claim_path(path).exists() and claim_owner(path) is None
    with claim(path):
        assert claim_path(path).exists()
    assert not claim_path(path).exists()


def test_stale_claims_are_taken_over_and_fresh_foreign_ones_respected(tmp_path, monkeypatch):
    path = tmp_path / "0123456789abcdef.json"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    cpath = claim_path(path)
    cpath.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    assert claim_owner(path) is None  # its process is gone
    claim(path).release()
    cpath.write_text(json.dumps({"pid": 1, "host": "another-host"}))  # fresh: its heartbeat runs
    with pytest.raises(ClaimedError, match="process 1 on another-host"):
        claim(path)
    old = time.time() - feasible.experiment.CLAIM_STALE_S - 5
    os.utime(cpath, (old, old))  # the other host stopped refreshing it: stale
    assert claim_owner(path) is None
    claim(path).release()
    cpath.write_text("")  # created, not yet written: held for a moment, then stale
    with pytest.raises(ClaimedError, match="computed by another process"):
        claim(path)
    old = time.time() - feasible.experiment.CLAIM_WRITE_S - 1
    os.utime(cpath, (old, old))
    claim(path).release()
    monkeypatch.setenv("FEASIBLE_CLAIM_STALE_S", "soon")
    with pytest.raises(ValueError, match="FEASIBLE_CLAIM_STALE_S must be a number"):
        claim(path)


def test_run_waits_for_the_process_that_holds_its_claim(tmp_path, warm):
    config = Config(method="ft", **SMOKE)
    path = record_path(config)
    path.parent.mkdir(parents=True)
    holder = _holder(tmp_path, path, 2.0)
    with pytest.raises(ClaimedError, match=re.escape(f"claim file {claim_path(path)})")):
        run(config, wait=False)
    start = time.monotonic()
    with pytest.warns(UserWarning, match=f"Waiting: Configuration {path.stem} is being computed "
                                         f"by process {holder.pid}"):
        record, computed = compute_once(config)
    assert computed and time.monotonic() - start > 0.5 and read_record(path)[0] == record
    assert _finish(holder)[0] == 0 and not claim_path(path).exists()


def test_sweep_leaves_a_claimed_configuration_to_its_live_holder(tmp_path, capsys, warm):
    grid = _grid(tmp_path, {**GRID, "methods": ["ft"]})
    busy, free = expand(load_grid(grid))
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    holder = _holder(tmp_path, record_path(busy), 600)
    try:
        assert main(["sweep", str(grid), "--dry-run", "--no-progress"]) == 0
        assert f"running   {record_path(busy).name}" in capsys.readouterr().out
        assert main(["sweep", str(grid), "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "1 computed, 0 already recorded, 0 failed, 0 left (--limit), 1 running elsewhere" in out
        assert f"running elsewhere {config_hash(busy)}" in out and f"(process {holder.pid} on" in out
        assert _computed(out) == [config_hash(free)] and not record_path(busy).exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # dies holding the claim: its file stays
        holder.wait()
    assert claim_path(record_path(busy)).exists()
    assert main(["sweep", str(grid), "--no-progress"]) == 0  # the stale claim is taken over
    out = capsys.readouterr().out
    assert _computed(out) == [config_hash(busy)] and "1 already recorded" in out
    assert _leftovers(tmp_path) == []


def test_two_concurrent_sweeps_compute_every_configuration_once(tmp_path, warm):
    grid = _grid(tmp_path)
    hashes = sorted(config_hash(c) for c in expand(GRID))
    sweeps = [_start(tmp_path, "sweep", str(grid), "--no-progress") for _ in range(2)]
    results = [_finish(process) for process in sweeps]
    for code, out, err in results:
        assert code == 0, err
    computed = _computed(results[0][1]) + _computed(results[1][1])
    assert sorted(computed) == hashes, [r[1] for r in results]  # each exactly once
    assert [p.stem for p in _records(tmp_path)] == hashes
    assert all(read_record(p)[0] is not None for p in _records(tmp_path))
    assert _leftovers(tmp_path) == []


def test_a_sweep_killed_mid_run_restarts_cleanly(tmp_path, warm):
    grid = _grid(tmp_path, {**GRID, "methods": ["ft", "ga"]})
    hashes = sorted(config_hash(c) for c in expand(load_grid(grid)))
    folder = tmp_path / "results" / "smoke"
    first = _start(tmp_path, "sweep", str(grid), "--no-progress")
    def running_second() -> bool:  # a record, and the claim of a configuration without one
        return folder.is_dir() and any(folder.glob("*.json")) and any(
            not (folder / c.name[: -len(".claim")]).exists() for c in folder.glob("*.claim"))

    try:
        _wait_for(running_second, what="a record and the next claim")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # mid-way through the second configuration
        first.wait()
    done = [p.stem for p in folder.glob("*.json")]
    assert 1 <= len(done) < len(hashes) and list(folder.glob("*.claim"))
    unfinished = next(h for h in hashes if h not in done)
    (folder / f".{unfinished}.99999999.tmp").write_text('{"half": ')  # a write cut short
    code, out, err = _finish(_start(tmp_path, "sweep", str(grid), "--no-progress"))
    assert code == 0, err
    assert f"{len(hashes) - len(done)} computed, {len(done)} already recorded, 0 failed" in out
    assert sorted(_computed(out) + done) == hashes
    assert [p.stem for p in _records(tmp_path)] == hashes
    assert all(read_record(p)[0] is not None for p in _records(tmp_path))
    assert _leftovers(tmp_path) == []


# --- 5. devices ---------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["tpu", "garbage", "", "meta", "cpu:1", "CPU", 3])
def test_unknown_devices_are_rejected(device):
    with pytest.raises(ValueError, match=f"Unknown device {device!r}; expected one of 'cpu'"):
        resolve_device(device)


def test_known_devices_resolve():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_cuda_without_a_gpu_is_rejected(device):
    with pytest.raises(ValueError, match=f"Device '{device}' is not available: this machine has "
                                         f"no CUDA device; expected one of 'cpu'"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["tpu"] + (["cuda"] if NO_CUDA else []))
def test_every_command_rejects_a_bad_device_before_working(device, tmp_path, capsys, no_compute,
                                                           monkeypatch):
    monkeypatch.setattr("feasible.bench.unlearn", lambda *a, **k: pytest.fail("benchmarked"))
    commands = [["run", "--scale", "smoke", "--method", "ft"],
                ["sweep", str(_grid(tmp_path)), "--no-progress"],
                ["bench", "--model", "mlp"]]
    for args in commands:
        assert main(args + ["--device", device]) == 2, args
        err = capsys.readouterr().err
        assert f"python -m feasible {args[0]}: error: " in err and f"{device!r}" in err
    assert not (tmp_path / "results").exists()


# --- 6. grid files ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("folder", "is a folder, not a JSON file"),
    ("", "is empty; expected a JSON object"),
    ("  \n", "is empty"),
    ("{'methods': ['ft']}", "is not valid JSON: Expecting property name"),
    ('{"methods": ["ft"]', "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object. Got list instead."),
    ('{"fixed": ["scale", "smoke"], "methods": ["ft"]}', "'fixed' must be an object of Config "
                                                         "fields. Got ['scale', 'smoke']"),
    ('{"fixed": "smoke", "methods": ["ft"]}', "'fixed' must be an object"),
    ('{"description": 3, "methods": ["ft"]}', "'description' must be a string"),
    ('{"methods": "ft"}', "the grid key 'methods' must be a non-empty list"),
    ('{"methods": []}', "the grid key 'methods' must be a non-empty list"),
    ('{"methods": [["ft", "ga"]]}', "the entry ['ft', 'ga'] of grid key 'methods' must be a value"),
    ('{"fixed": {"scale": "smoke"}, "methods": ["ft"], "addons": ["porb"]}',
     "Unknown add-on 'porb'"),
])
def test_bad_grid_files_are_clear_errors(content, words, tmp_path, capsys, no_compute):
    path = tmp_path / "grid.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    assert main(["sweep", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m feasible sweep: error: The grid file {path}")
    assert words in err and "Traceback" not in err


def test_a_bad_grid_file_in_a_real_process_has_no_traceback(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text('{"fixed": [1]}')
    done = subprocess.run([sys.executable, "-m", "feasible", "sweep", str(path)], cwd=ROOT,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == (f"python -m feasible sweep: error: The grid file {path}: 'fixed' must "
                           f"be an object of Config fields. Got [1] instead.\n")
