"""The example of docs/sdk.md, run as written against a real controller on loopback, with
the repository's examples/quickstart.yaml; only the controller's address is changed. The
workers are in process (the latency service's core on LiteRT, the reward function), the
training scripted, returning real PyTorch weights."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

from mnas.results import Trial
from tests.common.local_workers import InProcessWorkers
from tests.controller.stack import local_stack
from tests.mnas.weights_training import WeightsTraining

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sdk.md"
TARGET = '"127.0.0.1:50051"'


def example() -> str:
    """The first Python block after the page's "## Example" heading."""
    text = DOC.read_text()
    section = text[text.index("\n## Example\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "docs/sdk.md: no Python block under '## Example'"
    return match.group(1)


def test_the_example_runs_against_a_real_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = example()
    assert code.count(TARGET) == 1, "the example names the controller once"
    assert '"examples/quickstart.yaml"' in code
    monkeypatch.chdir(ROOT)  # the example's path is relative to the repository
    trainer = WeightsTraining()
    out = io.StringIO()
    namespace: dict[str, object] = {"__name__": "__sdk_example__"}
    with (
        local_stack(tmp_path, InProcessWorkers(trainer)) as stack,
        contextlib.redirect_stdout(out),
    ):
        exec(compile(code.replace(TARGET, repr(stack.address)), str(DOC), "exec"), namespace)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"search \S+ succeeded: 8 completed", lines[0]), lines
    assert len([line for line in lines if line.startswith("#")]) == 3
    assert lines[4].startswith("Pareto front, fastest first: [")
    for line in lines[
        1:4
    ]:  # e.g. "#5 reward 0.8123 accuracy 0.8000 latency 0.062 ms (robust) r1_..."
        assert re.fullmatch(
            r"#\d+ reward \d\.\d{4} accuracy \d\.\d{4} latency \d+\.\d{3} ms \(robust\) r\d.*",
            line,
        ), line
    # The loaded module holds the weights the trainer sent for the best trial.
    best, model = namespace["best"], namespace["model"]
    assert isinstance(best, Trial)
    assert isinstance(model, torch.nn.Module) and not model.training
    sent = torch.load(io.BytesIO(trainer.sent[best.architecture]), weights_only=True)
    assert all(torch.equal(model.state_dict()[name], value) for name, value in sent.items())
    assert isinstance(namespace["fresh"], torch.nn.Module)
    print(out.getvalue())  # shown with -s
