"""Progress reports: silent unless asked for, one line per phase in logs, a bar on a terminal."""
from __future__ import annotations

import io
import re

import pytest

from feasible import progress
from feasible.__main__ import main
from feasible.experiment import Config, run

#: A plain end-of-phase line.
LINE = re.compile(r"^\[feasible\] (?:(?:w\d+ )?\S+: )?(.+) \.\.\. (done in|failed after|"
                  r"interrupted after) \d+\.\d s(?: \((.*)\))?$")


@pytest.fixture(autouse=True)
def _default_setting(monkeypatch, tmp_path):
    """Each test starts from the library's default: off, no FEASIBLE_PROGRESS."""
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setenv("FEASIBLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEASIBLE_RESULTS", str(tmp_path / "results"))
    previous = progress.enable(False)
    yield
    progress.enable(previous)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _phases(text: str) -> list[str]:
    """The phase labels of the plain lines in ``text`` (each line must be one)."""
    lines = [line for line in text.splitlines() if line.startswith("[feasible]")]
    out = []
    for line in lines:
        match = LINE.match(line)
        assert match, line
        out.append(match.group(1))
    return out


def test_silent_by_default(capsys):
    stream = io.StringIO()
    with progress.phase("train original", total=3, stream=stream) as step:
        for _ in range(3):
            step.advance()
    with progress.phase("evaluate"):
        pass
    assert stream.getvalue() == "" and capsys.readouterr().err == ""
    assert not progress.enabled()


def test_one_plain_line_per_phase_when_not_a_terminal(capsys):
    progress.enable(True)
    with progress.phase("load data"):
        pass
    with progress.phase("unlearn 3 epochs", total=3) as step:
        for _ in range(3):
            step.advance()
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and _phases(err) == ["load data", "unlearn 3 epochs"]
    assert err.splitlines()[1].startswith("[feasible] unlearn 3 epochs ... done in ")


def test_lines_name_the_run_and_the_worker_and_say_what_happened(capsys):
    progress.enable(True)
    with progress.labelled("digits/mlp/random0.1/ft+none/seed0", worker=2):
        with progress.phase("train original", total=30) as step:
            step.note = "loaded from the cache"
        with progress.phase("unlearn 30 epochs", total=30) as step:
            step.advance(7)  # stopped early (diverged)
        with pytest.raises(RuntimeError):
            with progress.phase("evaluate"):
                raise RuntimeError("boom")
    with progress.phase("after"):
        pass
    lines = capsys.readouterr().err.splitlines()
    head = "[feasible] w2 digits/mlp/random0.1/ft+none/seed0: "
    assert lines[0].startswith(head + "train original ... done in ")
    assert lines[0].endswith(" s (loaded from the cache)")
    assert lines[1].startswith(head + "unlearn 30 epochs ... done in ") and lines[1].endswith("(7/30)")
    assert lines[2].startswith(head + "evaluate ... failed after ") and lines[2].endswith(
        "(RuntimeError)")
    assert lines[3].startswith("[feasible] after ... done in ")  # the label ends with its block
    assert len(lines) == 4 and all(LINE.match(line) for line in lines)


def test_environment_and_quiet_override_the_setting(monkeypatch, capsys):
    progress.enable(True)
    monkeypatch.setenv(progress.ENV, "0")
    with progress.phase("silenced"):
        pass
    assert capsys.readouterr().err == ""
    progress.enable(False)
    monkeypatch.setenv(progress.ENV, "1")
    with progress.phase("asked for"):
        pass
    with progress.phase("quiet", quiet=True):
        pass
    assert _phases(capsys.readouterr().err) == ["asked for"]
    monkeypatch.delenv(progress.ENV)
    with progress.phase("forced", quiet=False):
        pass
    assert _phases(capsys.readouterr().err) == ["forced"]
    monkeypatch.setenv(progress.ENV, "maybe")
    with pytest.raises(ValueError, match="FEASIBLE_PROGRESS must be 1 or 0.*'maybe'"):
        progress.enabled()


def test_a_terminal_gets_a_bar_with_elapsed_and_remaining_time():
    progress.enable(True)
    stream = _Terminal()
    with progress.labelled("digits/mlp/random0.1/ft+none/seed0"):
        with progress.phase("unlearn 4 epochs", total=4, stream=stream) as step:
            for _ in range(4):
                step.advance()
    text = stream.getvalue()
    assert "[feasible]" not in text  # no plain line: the bar is the report
    assert "digits/mlp/random0.1/ft+none/seed0: unlearn 4 epochs" in text
    assert re.search(r"4/4 \[\d\d:\d\d<\d\d:\d\d", text)  # elapsed < remaining, as tqdm draws it


def test_tally_line():
    assert progress.tally(0, 30, 0.0) == "[feasible] 0/30 runs in 0s"
    assert progress.tally(3, 30, 80.0) == "[feasible] 3/30 runs in 1m 20s, about 12m 00s left"
    assert progress.tally(30, 30, 7300.0) == "[feasible] 30/30 runs in 2h 01m"


def test_library_run_is_silent_and_the_command_line_reports_each_phase(capsys):
    config = Config(method="ft", scale="smoke", epochs=2)
    run(config)
    assert "[feasible]" not in capsys.readouterr().err
    assert main(["run", "--scale", "smoke", "--method", "ga", "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    phases = _phases(err)
    assert phases == ["load data", "train original", "train retrained", "evaluate references",
                      "unlearn 2 epochs", "evaluate"], err
    assert "digits/mlp/random0.1/ga+none/seed0: train original" in err
    assert "loaded from the cache" in err  # trained by the library run above
    assert not progress.enabled()  # main restores the setting
    assert main(["run", "--scale", "smoke", "--method", "rl", "--epochs", "1",
                 "--no-progress"]) == 0
    assert "[feasible]" not in capsys.readouterr().err
