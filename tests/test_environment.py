"""The user-facing environment files agree with the lock the project is tested with."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(text: str) -> dict[str, str]:
    pins = re.findall(r"^[\s-]*([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_environment_yml_pins_match_the_lock():
    lock = _pins((ROOT / "requirements.lock").read_text())
    env = _pins((ROOT / "environment.yml").read_text())
    assert env, "environment.yml lists no pins"
    mismatched = {name: (version, lock.get(name)) for name, version in env.items() if lock.get(name) != version}
    assert not mismatched, f"environment.yml pin differs from requirements.lock: {mismatched}"


def test_lock_covers_the_projects_requirements():
    lock = _pins((ROOT / "requirements.lock").read_text())
    text = (ROOT / "pyproject.toml").read_text()
    names = re.findall(r'^\s*"([A-Za-z0-9_.\-]+)\s*[<>=!~]', text, flags=re.M)
    missing = [n for n in names if n.lower().replace("_", "-") not in lock]
    assert not missing, f"pyproject.toml requires packages the lock does not pin: {missing}"
