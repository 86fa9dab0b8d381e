"""``mnas report``: the HTML page from synthetic trials, the command over a real SQLite store
and over a real controller, ``mnas search --report``, and the page as headless Chromium
draws it."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mnas.cli import main
from mnas.client import Client
from mnas.report import reference_summary, render_report
from mnas.results import SearchState
from mnas.space import SearchSpace
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from services.controller.store import Store
from tests.common.local_workers import InProcessWorkers
from tests.controller.stack import local_stack

TS = common_pb2.TrialState
CHROMIUM = "/usr/bin/chromium"
TARGET_MS = 75.0


def make_search(name: str = "demo", search_id: str = "s-1", trials: int = 0) -> common_pb2.Search:
    spec = common_pb2.SearchSpec(
        name=name,
        strategy="ppo",
        objective=common_pb2.Objective(
            kind=common_pb2.OBJECTIVE_KIND_SOFT, target_latency_seconds=TARGET_MS / 1e3
        ),
        budget=common_pb2.Budget(max_trials=max(trials, 1)),
        training=common_pb2.Training(dataset="fashion-mnist"),
        latency=common_pb2.LatencySettings(device_class="pixel-1"),
    )
    return common_pb2.Search(id=search_id, spec=spec, state=common_pb2.SEARCH_STATE_SUCCEEDED)


def make_trials(
    search_id: str, n: int, *, failed: int = 0, seed: int = 3
) -> list[common_pb2.Trial]:
    """``n`` completed trials over a spread of latencies around T (soft reward), then
    ``failed`` failed ones."""
    rng = random.Random(seed)
    space = SearchSpace()
    trials = []
    for number in range(n + failed):
        arch = space.sample(rng)
        trial = common_pb2.Trial(
            search_id=search_id,
            number=number,
            architecture=common_pb2.Architecture(canonical=arch.canonical, id=arch.id),
        )
        if number < n:
            latency = rng.uniform(0.4, 1.8) * TARGET_MS / 1e3
            accuracy = 0.6 + 0.3 * min(latency / (TARGET_MS / 1e3), 1.4) / 1.4 + rng.gauss(0, 0.02)
            trial.state = TS.TRIAL_STATE_COMPLETED
            trial.training.accuracy = accuracy
            trial.latency.robust_seconds = latency
            trial.latency.median_seconds = latency * 1.05
            trial.reward = accuracy * (latency / (TARGET_MS / 1e3)) ** -0.07
        else:
            trial.state = TS.TRIAL_STATE_FAILED
            trial.error = "trainer lost"
        trials.append(trial)
    return trials


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


# --- the page --------------------------------------------------------------------------


def test_page_has_the_three_plots_inline_and_the_best_trials() -> None:
    search = make_search(trials=24)
    trials = make_trials(search.id, 20, failed=4)
    page = render_report(search, trials, top=5)
    plots = svgs(page)
    assert len(plots) == 3
    assert 'id="pareto"' in page and 'id="reward"' in page and 'id="latency"' in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    # The target T marked on the Pareto plot (and the histogram), named in the legend.
    assert "target T = 75 ms" in plots[0] and "target T = 75 ms" in plots[2]
    assert "reward" in plots[0]  # the colour bar's label
    # ids are unique across the inline figures
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    # The table: the five best completed trials, best first, with id and block string.
    completed = [t for t in trials if t.state == TS.TRIAL_STATE_COMPLETED]
    best = sorted(completed, key=lambda t: -t.reward)[:5]
    rows = re.findall(r'<tr id="trial-(\d+)">', page)
    assert [int(r) for r in rows] == [t.number for t in best]
    for t in best:
        assert t.architecture.id in page
        assert t.architecture.canonical in page
        assert f"{t.training.accuracy:.4f}" in page
        assert f"{t.latency.robust_seconds * 1e3:.3f}" in page  # the robust figure, in ms
    # Failed trials are counted, not drawn.
    assert "20 of 24 done: 20 completed, 4 failed" in page
    assert f"{best[0].reward:.4f} (trial {best[0].number})" in page


def test_failed_trials_are_left_out_of_the_plots() -> None:
    search = make_search(trials=10)
    trials = make_trials(search.id, 6)
    lost = common_pb2.Trial(search_id=search.id, number=99, state=TS.TRIAL_STATE_FAILED)
    lost.latency.robust_seconds = 9.0  # far outside: it would stretch the axes if drawn
    lost.reward = 5.0
    assert svgs(render_report(search, [*trials, lost])) == svgs(render_report(search, trials))


def test_strings_from_the_spec_and_store_are_escaped() -> None:
    search = make_search(name='<script>alert("x")</script>', search_id="a&b")
    search.error = "<b>bad</b>"
    trials = make_trials(search.id, 3)
    trials[0].architecture.id = "<i>id</i>"
    page = render_report(search, trials)
    assert "<script>" not in page and "<b>bad</b>" not in page and "<i>id</i>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert (
        "a&amp;b" in page and "&lt;b&gt;bad&lt;/b&gt;" in page and "&lt;i&gt;id&lt;/i&gt;" in page
    )


def test_a_search_without_completed_trials_says_so() -> None:
    search = make_search(trials=3)
    search.state = common_pb2.SEARCH_STATE_RUNNING
    page = render_report(search, make_trials(search.id, 0, failed=2))
    assert svgs(page) == []
    assert "No completed trial yet" in page
    assert "0 of 3 done: 2 failed" in page and "none yet" in page


RS = common_pb2.ReferenceState
# (the reference as stored, what the summary says of it)
REFERENCES = [
    (
        common_pb2.Reference(
            name="space",
            state=RS.REFERENCE_STATE_MEASURED,
            training=common_pb2.TrainResult(accuracy=0.81234),
        ),
        "mobilenetv2-like (space reference) at width 0.5, 28x28: held-out accuracy 0.8123 on "
        "the same proxy",
    ),
    (
        common_pb2.Reference(name="mnasnet-a1", state=RS.REFERENCE_STATE_PENDING),
        "mnasnet-a1 at width 0.5, 28x28: not measured yet",
    ),
    (
        common_pb2.Reference(
            name="mnasnet-a1", state=RS.REFERENCE_STATE_FAILED, error="trainer t:1: ABORTED: oom"
        ),
        "mnasnet-a1 at width 0.5, 28x28: failed (trainer t:1: ABORTED: oom)",
    ),
]


@pytest.mark.parametrize(("reference", "summary"), REFERENCES)
def test_the_summary_tells_what_the_reference_scored(
    reference: common_pb2.Reference, summary: str
) -> None:
    search = make_search(trials=3)
    search.spec.space.width = 0.5
    search.spec.space.resolution = 28
    assert reference_summary(search) is None  # a search without one (spec.reference: none)
    assert "<dt>reference</dt>" not in render_report(search, make_trials(search.id, 3))
    search.reference.CopyFrom(reference)
    assert reference_summary(search) == summary
    page = render_report(search, make_trials(search.id, 3))
    assert f"<dt>reference</dt><dd>{summary}</dd>" in page


# --- the command over a store and over a controller ------------------------------------


@pytest.fixture
def store_file(tmp_path: Path) -> Iterator[tuple[Path, common_pb2.Search]]:
    path = tmp_path / "mnas.db"
    store = Store.open(str(path))
    search = make_search(search_id="stored", trials=12)
    store.create_search(search)
    for trial in make_trials(search.id, 10, failed=2):
        store.save_trial(trial)
    store.close()
    yield path, search


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_from_a_store_file(
    store_file: tuple[Path, common_pb2.Search], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, search = store_file
    output = tmp_path / "report.html"
    code, out, err = run(capsys, "report", search.id, "--store", str(path), "-o", str(output))
    assert code == 0, err
    assert str(output) in out
    page = output.read_text()
    assert len(svgs(page)) == 3
    assert "10 of 12 done: 10 completed, 2 failed" in page  # the budget counts scored ones
    assert sorted(p.name for p in tmp_path.iterdir() if "report" in p.name) == ["report.html"]
    # The same page on standard output.
    code, out, _ = run(capsys, "report", search.id, "--store", str(path), "-o", "-", "--top", "3")
    assert code == 0
    assert out.startswith("<!DOCTYPE html>") and len(re.findall(r'<tr id="trial-', out)) == 3


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (["report", "nope", "--store", "{db}", "-o", "{tmp}/r.html"], "no search 'nope'", 4),
        (["report", "stored", "--store", "{tmp}/absent.db", "-o", "{tmp}/r.html"], "no store", 2),
        (["report", "stored", "--store", "{db}", "-o", "{tmp}/missing/r.html"], "no directory", 2),
        (["report", "stored", "--store", "{db}", "-o", "{tmp}"], "is a directory", 2),
    ],
)
def test_report_errors_are_one_line_and_exit_2_or_4_when_not_found(
    store_file: tuple[Path, common_pb2.Search],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
    status: int,
) -> None:
    path, _ = store_file
    args = [a.format(db=path, tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *args)
    assert code == status
    assert out == ""
    assert err.startswith("mnas: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "absent.db").exists()  # reading never creates a store


def test_a_database_that_is_no_store_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()
    before = other.read_bytes()
    code, out, err = run(
        capsys, "report", "x", "--store", str(other), "-o", str(tmp_path / "r.html")
    )
    assert code == 2 and out == ""
    assert "holds no mnas store" in err
    assert other.read_bytes() == before  # no tables added, no journal mode changed


def test_report_of_an_unreachable_controller_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnas.local import free_port

    target = f"127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "report", "x", "--target", target, "-o", str(tmp_path / "r.html"))
    assert code == 3  # the service is unreachable
    assert err.startswith("mnas: error: ") and "unavailable" in err
    assert not (tmp_path / "r.html").exists()


def sized_training(
    request: trainer_pb2.TrainRequest,
    report: Callable[[common_pb2.TrainProgress], None],
    aborted: threading.Event,
) -> tuple[common_pb2.TrainResult, bytes | None]:
    """Answers at once with an accuracy that grows with the network's size."""
    accuracy = 0.5 + (len(request.architecture.canonical) % 37) / 100
    return common_pb2.TrainResult(accuracy=accuracy, samples_seen=1), None


SPEC = """
name: report
duplicates: DUPLICATE_POLICY_RETRAIN
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv, mbconv3], kernels: [3, 5], se_ratios: [0], skips: [identity],
            filter_ratios: [0.5, 1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 6, parallel_trials: 1}
latency: {warmup_runs: 1, runs: 2}
"""


def test_report_from_a_controller_matches_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real controller on loopback, its workers in process; the training answers at once."""
    with (
        local_stack(tmp_path, InProcessWorkers(sized_training)) as stack,
        Client(stack.address) as client,
    ):
        search = client.submit(parse_spec(SPEC))
        final = search.wait(timeout=120)
        assert final.state is SearchState.SUCCEEDED, final.error
        over_grpc = tmp_path / "grpc.html"
        code, _, err = run(
            capsys, "report", search.id, "--target", stack.address, "-o", str(over_grpc)
        )
        assert code == 0, err
        code, _, err = run(capsys, "report", "missing", "--target", stack.address, "-o", "-")
        assert code == 4 and err.startswith("mnas: error: ") and "missing" in err
    from_store = tmp_path / "store.html"
    code, _, err = run(
        capsys, "report", search.id, "--store", str(tmp_path / "mnas.db"), "-o", str(from_store)
    )
    assert code == 0, err

    def body(page: str) -> str:  # all but the time it was generated
        return re.sub(r"generated [^<]*", "", page)

    page = over_grpc.read_text()
    assert body(page) == body(from_store.read_text())
    assert len(svgs(page)) == 3
    assert "6 of 6 done: 6 completed" in page and "T = 1 ms" in page


# --- in a browser ------------------------------------------------------------------------


def screenshot(page: Path, png: Path, tmp_path: Path, height: int = 1600) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM} is absent)")
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium'}",
            f"--screenshot={png}",
            f"--window-size=1200,{height}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and png.exists(), result.stderr[-2000:]


def colourful_rows(png: Path) -> tuple[float, int]:
    """The share of non-white pixels, and how many rows hold saturated (plot) colours:
    text, rules and table shading are grey; only the plots are in colour."""
    from matplotlib.image import imread

    image = imread(str(png))[..., :3]
    non_white = float((image.min(axis=2) < 0.9).mean())
    saturation = image.max(axis=2) - image.min(axis=2)
    return non_white, int(((saturation > 0.3).sum(axis=1) >= 5).sum())


def test_chromium_draws_the_plots(tmp_path: Path) -> None:
    search = make_search(trials=40)
    report = tmp_path / "report.html"
    report.write_text(render_report(search, make_trials(search.id, 36, failed=4)))
    empty = tmp_path / "empty.html"
    empty.write_text(render_report(search, make_trials(search.id, 0, failed=4)))
    screenshot(report, tmp_path / "report.png", tmp_path)
    screenshot(empty, tmp_path / "empty.png", tmp_path)
    non_white, rows = colourful_rows(tmp_path / "report.png")
    assert non_white > 0.03  # not blank
    assert rows > 300  # the Pareto plot alone is about 500 px tall in colour
    _, empty_rows = colourful_rows(tmp_path / "empty.png")
    assert empty_rows < 20


@pytest.mark.slow
def test_mnas_search_writes_the_report(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: cli-report\nseed: 5\nspace: {resolution: 28, width: 0.5}\n"
        "objective: {kind: soft, target_latency_seconds: 0.001}\nbudget: {max_trials: 2}\n"
        "training: {train_examples: 500, validation_examples: 300, batch_size: 50}\n"
        "latency: {warmup_runs: 1, runs: 3}\n"
    )
    mnas = Path(sys.executable).parent / "mnas"
    report = tmp_path / "out.html"
    result = subprocess.run(
        [
            str(mnas),
            "search",
            str(spec),
            "--store",
            str(tmp_path / "mnas.db"),
            "--logs",
            str(tmp_path / "logs"),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"to {report}" in result.stdout.replace("\n", "")
    page = report.read_text()
    assert len(svgs(page)) == 3 and "Search cli-report" in page
    assert "2 of 2 done: 2 completed" in page
    if shutil.which(CHROMIUM):
        png = tmp_path / "search.png"
        screenshot(report, png, tmp_path)
        assert colourful_rows(png)[1] > 300
