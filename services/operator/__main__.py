"""``python -m services.operator --port P --controller ADDR [--namespace NS]``.

Serves the gRPC health service (SERVING as soon as it runs, whether or not the Kubernetes
API answers: the operator keeps retrying and logs) and ``/metrics``, and runs the loop that
reconciles MnasSearch objects until SIGTERM.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from services.common.cli import (
    add_client_tls_arguments,
    base_parser,
    client_tls,
    configure_logging,
    server_tls,
)
from services.common.server import (
    build_server,
    catch_stop_signals,
    serve_from_args,
    service_registry,
)
from services.operator.controller import GrpcController
from services.operator.kube import KubeApi, load_api_client
from services.operator.loop import Operator, OperatorMetrics
from services.operator.reconcile import Reconciler

_logger = logging.getLogger(__name__)


def main() -> None:
    parser = base_parser("python -m services.operator", "The MnasSearch operator.")
    parser.add_argument("--controller", required=True, help="the controller's host:port")
    parser.add_argument(
        "--namespace",
        default=os.environ.get("MNAS_NAMESPACE") or None,
        help="watch MnasSearch objects of this namespace (default $MNAS_NAMESPACE, "
        "else every namespace, which needs a ClusterRole)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: the Pod's service account, else ~/.kube/config)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=5.0,
        help="how often running searches are read from the controller (default 5)",
    )
    parser.add_argument(
        "--token-file",
        default=os.environ.get("MNAS_TOKEN_FILE") or None,
        help="file holding the bearer token for a controller that checks tokens, an admin's "
        "(default $MNAS_TOKEN_FILE; $MNAS_TOKEN holds the token itself)",
    )
    add_client_tls_arguments(parser)
    args = parser.parse_args()
    configure_logging(args.log_level)
    catch_stop_signals()  # a signal during start-up is not lost
    tls, controller_tls = server_tls(parser, args), client_tls(parser, args)
    token = os.environ.get("MNAS_TOKEN") or None
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as err:
            parser.error(f"--token-file: cannot read {args.token_file!r}: {err.strerror}")
    registry = service_registry(args, "operator")
    running = build_server(
        service_names=[],
        add_servicers=lambda _: None,
        registry=registry,
        port=args.port,
        host=args.host,
        tls=tls,
        health_port=args.health_port,
    )
    controller = GrpcController(args.controller, token=token, tls=controller_tls)
    objects = KubeApi(load_api_client(args.kubeconfig), args.namespace)
    operator = Operator(
        objects,
        Reconciler(controller, objects),
        OperatorMetrics(registry),
        poll_seconds=args.poll_seconds,
    ).start()
    running.on_stop.append(operator.stop)
    _logger.info(
        "reconciling MnasSearch objects in %s with the controller at %s",
        args.namespace or "every namespace",
        args.controller,
    )
    try:
        serve_from_args(running, args)
    finally:
        controller.close()


if __name__ == "__main__":
    main()
