"""``python -m services.controller --port P --store URL --trainer A --latency A --reward A``."""

from __future__ import annotations

import logging
import os
import threading

from services.common.cli import (
    add_client_tls_arguments,
    base_parser,
    client_tls,
    configure_logging,
    server_tls,
)
from services.common.server import catch_stop_signals, serve_from_args, service_registry
from services.controller.clients import Backends
from services.controller.core import Controller
from services.controller.gate import DEFAULT_SLOTS
from services.controller.learner import warm_up
from services.controller.metrics import ControllerMetrics
from services.controller.server import make_server
from services.controller.store import Store
from services.controller.users import Users

STORE_ENV = "MNAS_STORE_URL"

_logger = logging.getLogger("services.controller")


def _targets(values: list[str]) -> list[str]:
    return [t for value in values for t in value.split(",") if t]


def _one_torch_thread() -> None:
    """The PPO policy is tiny: one thread, so it never competes with trainers for cores
    (oversubscribed torch thread pools were seen to slow updates a hundredfold)."""
    try:
        import torch
    except ImportError:  # a controller without the PPO strategy's dependency
        return
    torch.set_num_threads(1)


def main() -> None:
    parser = base_parser("python -m services.controller", "The mnas controller.")
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV, "mnas.db"),
        help=f"SQLite file path or database URL (default: ${STORE_ENV}, else mnas.db; the "
        "environment keeps a database password off the command line)",
    )
    parser.add_argument(
        "--trainer",
        action="append",
        default=[],
        required=True,
        help="trainer endpoint host:port or dns:///name:port (repeatable)",
    )
    parser.add_argument(
        "--latency",
        action="append",
        default=[],
        required=True,
        help="latency endpoint host:port or dns:///name:port (repeatable)",
    )
    parser.add_argument("--reward", required=True, help="reward service host:port")
    parser.add_argument(
        "--auth-tokens",
        metavar="FILE",
        default=None,
        help="YAML mapping each bearer token to a user (token: NAME, or token: {user: NAME, "
        "admin: true}): every Controller call then needs one, and a user sees only their "
        "own searches (default: no tokens, every caller sees every search)",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=256,
        help="gRPC server threads (default 256): each WatchSearch holds one while it lasts, "
        "and watches may take all but 32",
    )
    parser.add_argument(
        "--work-slots",
        type=int,
        default=DEFAULT_SLOTS,
        help=f"trial threads that run the controller's own work at once (default "
        f"{DEFAULT_SLOTS}); the others wait off the interpreter's queue, so API calls are "
        "answered promptly however many trials are in flight (see docs/reliability.md)",
    )
    add_client_tls_arguments(parser)
    args = parser.parse_args()
    if args.max_workers < 64:
        parser.error(f"--max-workers: must be >= 64, got {args.max_workers}")
    if args.work_slots < 1:
        parser.error(f"--work-slots: must be >= 1, got {args.work_slots}")
    configure_logging(args.log_level)
    catch_stop_signals()  # a signal during start-up is not lost
    tls, outgoing_tls = server_tls(parser, args), client_tls(parser, args)
    users = None
    if args.auth_tokens is not None:
        try:
            users = Users.from_file(args.auth_tokens)
        except ValueError as err:
            parser.error(f"--auth-tokens: {err}")
    _one_torch_thread()
    # PPO's learner process imports torch for seconds: start it now, not at the first update.
    threading.Thread(target=warm_up, name="learner-warm-up", daemon=True).start()
    registry = service_registry(args, "controller")
    store = Store.open(args.store)
    backends = Backends(
        trainers=_targets(args.trainer),
        latency=_targets(args.latency),
        reward=args.reward,
        tls=outgoing_tls,
    )
    controller = Controller(
        store, backends, ControllerMetrics(registry), work_slots=args.work_slots
    )
    controller.resume()  # before serving, so the first answers already see resumed searches
    running = make_server(
        controller,
        registry=registry,
        port=args.port,
        host=args.host,
        tls=tls,
        health_port=args.health_port,
        users=users,
        max_workers=args.max_workers,
    )
    if users is not None:
        _logger.info("checking bearer tokens: %d users", len(users))
    try:
        serve_from_args(running, args)
    finally:
        store.close()


if __name__ == "__main__":
    main()
