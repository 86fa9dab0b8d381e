"""Transport security: the certificates a server presents and a client trusts.

A server given a certificate and key speaks TLS only; given also a client CA, it asks
every client for a certificate signed by that CA and refuses those without one (mutual
TLS). A client given a CA trusts servers whose certificate that CA signed, and may present
a certificate of its own for mutual TLS. Files are read once, when the settings are made,
so a wrong path is an error at start-up that names its flag, not a failure at the first
call.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = [
    "ClientTLS",
    "ServerTLS",
    "add_client_tls_arguments",
    "add_server_tls_arguments",
    "client_tls_from_args",
    "server_tls_from_args",
]


def _read(path: str | Path, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"{flag}: cannot read {str(path)!r}: {err.strerror or err}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{flag}: {str(path)!r} holds no PEM block (-----BEGIN ...)")
    return data


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate chain and private key (PEM), and for mutual TLS the CA
    whose certificates clients must present."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(
        cls, cert: str | Path, key: str | Path, client_ca: str | Path | None = None
    ) -> ServerTLS:
        return cls(
            cert=_read(cert, "--tls-cert"),
            key=_read(key, "--tls-key"),
            client_ca=None if client_ca is None else _read(client_ca, "--tls-client-ca"),
        )

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ClientTLS:
    """What a client trusts (``ca``: None for the system's roots), the certificate and key
    it presents for mutual TLS, and the name to check the server's certificate against
    when it differs from the target's host (``server_name``)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str = ""

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        server_name: str = "",
    ) -> ClientTLS:
        if (cert is None) != (key is None):
            raise ValueError("--tls-client-cert and --tls-client-key: give both or neither")
        return cls(
            ca=None if ca is None else _read(ca, "--tls-ca"),
            cert=None if cert is None else _read(cert, "--tls-client-cert"),
            key=None if key is None else _read(key, "--tls-client-key"),
            server_name=server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def options(self) -> list[tuple[str, str]]:
        """Channel options: the server name override, if any."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def add_server_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert``, ``--tls-key``, ``--tls-client-ca`` (a service's own port)."""
    group = parser.add_argument_group("transport security (default: plaintext)")
    group.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    group.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    group.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="mutual TLS: admit only clients with a certificate this CA signed (PEM)",
    )


def server_tls_from_args(args: argparse.Namespace) -> ServerTLS | None:
    """The server settings of :func:`add_server_tls_arguments`' flags; None for plaintext.
    ``ValueError`` names the flag that is missing or unreadable."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ValueError("--tls-client-ca: needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("--tls-cert and --tls-key: give both or neither")
    return ServerTLS.from_files(args.tls_cert, args.tls_key, args.tls_client_ca)


# Environment variables the CLI and SDK read when the flags are absent.
CA_ENV = "MNAS_TLS_CA"
CERT_ENV = "MNAS_TLS_CLIENT_CERT"
KEY_ENV = "MNAS_TLS_CLIENT_KEY"
SERVER_NAME_ENV = "MNAS_TLS_SERVER_NAME"


def add_client_tls_arguments(parser: argparse.ArgumentParser, *, env: bool = False) -> None:
    """``--tls-ca``, ``--tls-client-cert``, ``--tls-client-key``, ``--tls-server-name``
    for outgoing calls; ``env``: default to the ``MNAS_TLS_*`` environment variables."""

    def default(name: str) -> str | None:
        return os.environ.get(name) if env else None

    def from_env(name: str) -> str:
        return f"; default ${name}" if env else ""

    group = parser.add_argument_group("transport security of outgoing calls (default: plaintext)")
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=default(CA_ENV),
        help="call over TLS, trusting servers this CA signed (PEM)" + from_env(CA_ENV),
    )
    group.add_argument(
        "--tls-client-cert",
        metavar="FILE",
        default=default(CERT_ENV),
        help="mutual TLS: present this certificate (PEM)" + from_env(CERT_ENV),
    )
    group.add_argument(
        "--tls-client-key",
        metavar="FILE",
        default=default(KEY_ENV),
        help="the client certificate's private key (PEM)" + from_env(KEY_ENV),
    )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=default(SERVER_NAME_ENV) or "",
        help="check the server's certificate against NAME, not the target's host"
        + from_env(SERVER_NAME_ENV),
    )


def client_tls_from_args(args: argparse.Namespace) -> ClientTLS | None:
    """The client settings of :func:`add_client_tls_arguments`' flags; None for plaintext
    (no CA and no client certificate given)."""
    if args.tls_ca is None and args.tls_client_cert is None and args.tls_client_key is None:
        if args.tls_server_name:
            raise ValueError("--tls-server-name: needs --tls-ca (TLS)")
        return None
    return ClientTLS.from_files(
        args.tls_ca, args.tls_client_cert, args.tls_client_key, args.tls_server_name
    )
