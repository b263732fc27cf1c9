"""The README's Python quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("## Quickstart (Python)")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_python_quickstart_runs_as_written_and_sums_to_delta(capsys):
    (block,) = _python_blocks()
    namespace: dict = {}
    exec(compile(block, "README quickstart", "exec"), namespace)
    scores, delta, x = namespace["scores"], namespace["delta"], namespace["x"]
    assert scores.shape == (x.shape[0], 3, *x.shape[1:])
    assert float(delta.abs().max()) < 1e-5  # float32 rounding
    assert "torch.Size([50, 3, 4, 200])" in capsys.readouterr().out
