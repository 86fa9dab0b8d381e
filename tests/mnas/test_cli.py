"""The ``mnas`` command line: arch describe/sample/list, space describe, and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnas.arch import decode
from mnas.cli import main
from mnas.space import SMALL_IMAGE_STAGES, SearchSpace


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_json_reports_published_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "describe", "mnasnet-a1", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["params"] == 3_887_038
    assert data["macs"] == 311_579_072
    assert data["id"] == "1a70457298853e66"
    assert len(data["blocks"]) == 7
    assert data["blocks"][0]["block"] == "r1_k3_s11_e1_i32_o16_noskip"
    code, out, _ = run(capsys, "arch", "describe", "mnasnet-a1", "--width", "1.4", "--json")
    assert round(json.loads(out)["params"] / 1e5) == 61


def test_describe_blocks_with_build_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = "r1_k3_s11_e1_i32_o16_noskip r2_k5_s22_e6_i16_o24_se0.25_poolskip"
    code, out, _ = run(
        capsys,
        "arch",
        "describe",
        "--blocks",
        blocks,
        "--resolution",
        "28",
        "--classes",
        "10",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["resolution"] == 28 and data["classes"] == 10
    assert [b["out_size"] for b in data["blocks"]] == [14, 7]
    assert data["canonical"] == decode(blocks).canonical


def test_describe_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "describe", "mobilenetv2")
    assert code == 0
    assert "3,504,872" in out
    assert "r4_k3_s22_e6_i32_o64" in out


def test_sample_prints_canonical_block_strings_from_the_space(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "arch", "sample", "--seed", "5", "--count", "4")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4
    space = SearchSpace()
    for line in lines:
        arch = decode(line)
        assert " ".join(str(b) for b in arch.blocks) == line
        space.to_decisions(arch)  # raises if outside the space
    _, again, _ = run(capsys, "arch", "sample", "--seed", "5", "--count", "4")
    assert again == out


def test_space_describe_json_gives_the_size(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "space", "describe", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["size"] == 432**7
    assert data["choices_per_block"] == 432
    assert data["num_blocks"] == 7
    code, out, _ = run(capsys, "space", "describe")
    assert str(432**7) in out


def test_a_preset_is_sampled_and_described(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "arch", "sample", "--preset", "small-images", "--seed", "3")
    assert code == 0
    arch = decode(out.strip())
    assert len(arch.blocks) == 5
    SearchSpace(stages=SMALL_IMAGE_STAGES).to_decisions(arch)  # raises if outside the space
    code, out, _ = run(capsys, "space", "describe", "--preset", "small-images", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["num_blocks"], data["size"]) == (5, 432**5)
    assert [b["reference"]["stride"] for b in data["blocks"]] == [1, 1, 2, 2, 1]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["arch", "describe", "--blocks", "r1_k4_s11_e1_i32_o16"], "kernel"),
        (["arch", "describe", "--blocks", "r1_k3_s11_e1_i32_o16_bogus"], "'bogus'"),
        (["arch", "describe", "resnet50"], "unknown architecture 'resnet50'"),
        (["arch", "describe"], "--blocks"),
        (["arch", "describe", "mnasnet-a1", "--blocks", "r1_k3_s11_e1_i32_o16"], "not both"),
        (["arch", "describe", "mnasnet-a1", "--width", "-1"], "width"),
        (["arch", "sample", "--count", "0"], "--count"),
        (["space", "describe", "--preset", "cifar"], "--preset: unknown preset 'cifar'"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("mnas: error: ")
    assert needle in lines[0]


def test_installed_console_script_exits_2_on_bad_block() -> None:
    script = Path(sys.executable).parent / "mnas"
    result = subprocess.run(
        [str(script), "arch", "describe", "--blocks", "r1_k3_s11_e1_i32_o16_se9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mnas: error: block 'r1_k3_s11_e1_i32_o16_se9': token 'se9' must be in (0, 1]"
    ]


def test_export_writes_a_tflite_file_that_litert_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    out = tmp_path / "small.tflite"
    code, stdout, _ = run(
        capsys,
        "arch",
        "export",
        "mnasnet-small",
        "-o",
        str(out),
        "--resolution",
        "64",
        "--classes",
        "10",
    )
    assert code == 0
    assert str(out) in stdout
    interpreter = Interpreter(model_path=str(out), num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    assert list(inp["shape"]) == [1, 64, 64, 3]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
    interpreter.invoke()
    (output,) = interpreter.get_output_details()
    assert interpreter.get_tensor(output["index"]).shape == (1, 10)


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    script = Path(sys.executable).parent / "mnas"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.strip() == f"mnas {version('mnas')}"


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "exit status: 0 success, 1 the search or command failed, 2 usage or bad input, "
        "3 the service is unreachable, 4 not found"
    ) in text


@pytest.mark.parametrize(
    "argv",
    [["list"], ["watch", "some-id"], ["devices"], ["best", "some-id"]],
    ids=["list", "watch", "devices", "best"],
)
def test_an_unreachable_service_exits_3_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from mnas.local import free_port

    code, out, err = run(capsys, *argv, "--target", f"127.0.0.1:{free_port()}")
    assert code == 3
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnas: error: ")


def test_exit_status_of_each_kind_of_error() -> None:
    from mnas.cli import exit_status
    from mnas.client import (
        ControllerUnavailable,
        InvalidSpec,
        MnasError,
        SearchNotFound,
        Unauthenticated,
    )
    from mnas.errors import UsageError

    assert exit_status(ControllerUnavailable("down")) == 3
    assert exit_status(SearchNotFound("no search 'x'")) == 4
    assert exit_status(InvalidSpec("budget.max_trials: ...")) == 2
    assert exit_status(UsageError("--top")) == 2
    assert exit_status(ValueError("block")) == 2
    assert exit_status(Unauthenticated("token")) == 2
    assert exit_status(MnasError("INTERNAL: boom")) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["arch", "describe", "mnasnet-a1"],
        ["arch", "list"],
        ["arch", "sample", "--seed", "1", "--count", "2"],
        ["space", "describe", "--preset", "small-images"],
    ],
    ids=["describe", "list", "sample", "space"],
)
def test_results_print_as_json_and_yaml_alike(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    import yaml

    code, as_json, _ = run(capsys, *argv, "-o", "json")
    assert code == 0
    code, as_yaml, _ = run(capsys, *argv, "-o", "yaml")
    assert code == 0
    assert json.loads(as_json) == yaml.safe_load(as_yaml)


def test_space_size_counts_choices_that_land_alike_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The mnasnet preset's first stage (16 filters, one layer) gives 16 filters for 0.75x
    and 1.0x and one layer for -1 and 0: fewer distinct networks than choices."""
    _, out, _ = run(capsys, "space", "describe", "-o", "json")
    summary = json.loads(out)
    assert summary["distinct_size"] < summary["size"]
    blocks = summary["blocks"]
    expected = 1
    for block in blocks:
        choices = block["choices"]
        expected *= (
            len(choices["op"]) * len(choices["kernel"]) * len(choices["se"]) * len(choices["skip"])
        )
        expected *= len(set(block["filters"])) * len(set(block["layers"]))
    assert summary["distinct_size"] == expected
    assert blocks[0]["filters"].count(16) == 2  # the duplicate the size counted twice


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    """``mnas arch sample --count N | head -c 300``: the reader goes away long before the
    output ends; no traceback, status 141 as for a tool SIGPIPE ended."""
    script = Path(sys.executable).parent / "mnas"
    popen = subprocess.Popen(
        [str(script), "arch", "sample", "--seed", "0", "--count", "20000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert popen.stdout is not None and popen.stderr is not None
    assert len(popen.stdout.read(300)) == 300
    popen.stdout.close()
    err = popen.stderr.read().decode()
    assert popen.wait(120) == 141
    assert err == ""


def test_a_file_that_cannot_be_written_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "a.tflite"
    code, _, err = run(capsys, "arch", "export", "mnasnet-a1", "-o", str(target))
    assert code == 2
    assert err.splitlines() == [
        f"mnas: error: -o: no directory {str(target.parent)!r} to write 'a.tflite' in"
    ]
    assert not target.parent.exists()


def test_an_os_error_is_one_line_with_status_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A directory where the file should go: the system's error, on one line."""
    (tmp_path / "a.tflite").mkdir()
    code, _, err = run(
        capsys,
        "arch",
        "export",
        "--blocks",
        "r1_k3_s11_e1_i32_o16_noskip",
        "--resolution",
        "32",
        "--classes",
        "10",
        "-o",
        str(tmp_path / "a.tflite"),
    )
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"mnas: error: {tmp_path / 'a.tflite'}: ")
    assert "Is a directory" in lines[0]


def test_a_store_in_a_missing_directory_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
    store = tmp_path / "nowhere" / "x.db"
    code, _, err = run(capsys, "search", str(spec), "--store", str(store))
    assert code == 2
    assert err.splitlines() == [
        f"mnas: error: --store: no directory {str(store.parent)!r} for the SQLite file "
        "'x.db'; create it first, or give a database URL"
    ]
    assert not store.parent.exists()


def test_the_store_defaults_to_mnas_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnas.cli import _parser

    monkeypatch.setenv("MNAS_STORE", "postgresql://db/mnas")
    assert _parser().parse_args(["up"]).store == "postgresql://db/mnas"
    assert _parser().parse_args(["search", "x.yaml"]).store == "postgresql://db/mnas"
