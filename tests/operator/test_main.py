"""``python -m services.operator`` as a process: healthy while the Kubernetes API is not
there (it keeps retrying), stops on SIGTERM, and imports no controller code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mnas.local import free_port, start_service, wait_serving
from tests.common.grpc_helpers import health_status

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: "http://127.0.0.1:%d"}
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody}
current-context: nowhere
users:
- name: nobody
  user: {}
"""


def test_serving_while_the_api_is_unreachable_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % free_port())  # nothing listens there
    process = start_service(
        "operator",
        log_dir=tmp_path,
        args=[
            "--controller",
            f"127.0.0.1:{free_port()}",
            "--namespace",
            "mnas",
            "--kubeconfig",
            str(kubeconfig),
            "--poll-seconds",
            "0.1",
            "--grace",
            "1",
        ],
    )
    try:
        wait_serving(process, "", timeout=60)
        assert health_status(process.address, "") == "SERVING"
    finally:
        process.terminate()
    assert process.popen.returncode == 0, process.log_tail()


def test_the_operator_imports_no_torch_sqlalchemy_or_controller() -> None:
    code = (
        "import sys, services.operator.__main__, services.operator.crd\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'sqlalchemy')"
        " or m.startswith('services.controller')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
