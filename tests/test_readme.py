"""The README's example of the add-ons in one's own loop runs as written."""
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _section_code(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_own_loop_example_runs_and_moves_the_model():
    code = _section_code("Use the add-ons in your own loop")
    assert len(code.strip().splitlines()) <= 15
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), namespace)
    model, u = namespace["model"], namespace["u"]
    assert set(u) == {name for name, _ in model.named_parameters()}
    assert all(torch.isfinite(t).all() for t in u.values())
