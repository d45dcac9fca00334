"""A client's gRPC channel to a splitnet server: TLS when asked for, and its bearer token.

Torch-free: the device daemon and ``splitnet explain`` use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc

from splitnet._errors import ConfigError
from splitnet.wire._auth import read_token
from splitnet.wire._net import read_pem

__all__ = ["bearer_metadata", "client_channel"]


def client_channel(
    target: str,
    *,
    options: Sequence[tuple[str, object]] = (),
    tls_ca: str | os.PathLike | None = None,
    tls_cert: str | os.PathLike | None = None,
    tls_key: str | os.PathLike | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target``: TLS with any of the three files (the server's CA; a
    client certificate and key for mutual TLS), plain otherwise.

    Raises:
        ConfigError: a certificate without its key (or the reverse), an unreadable or
            non-PEM file.
    """
    if tls_ca or tls_cert or tls_key:
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("a client certificate needs both --tls-cert and --tls-key")
        creds = grpc.ssl_channel_credentials(
            root_certificates=read_pem(tls_ca, "--tls-ca"),
            private_key=read_pem(tls_key, "--tls-key"),
            certificate_chain=read_pem(tls_cert, "--tls-cert"),
        )
        return grpc.aio.secure_channel(target, creds, options=list(options))
    return grpc.aio.insecure_channel(target, options=list(options))


def bearer_metadata(token_file: str | os.PathLike | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries the token of ``token_file`` (none without one)."""
    if token_file is None:
        return ()
    return (("authorization", f"Bearer {read_token(token_file)}"),)
