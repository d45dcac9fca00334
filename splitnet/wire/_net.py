"""Checks of the network options users type: ports, ``host:port`` lists, TLS files.

Torch-free (the device daemon uses it) and socket-free except :func:`listen_error`,
which only explains why a port could not be bound. Every check raises
:class:`~splitnet.ConfigError` with one line that names the option.

Example:
    >>> parse_address("[::1]:8001").target
    '[::1]:8001'
    >>> grpc_target([parse_address("10.0.0.1:8001"), parse_address("10.0.0.2:8001")])
    'ipv4:10.0.0.1:8001,10.0.0.2:8001'
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from splitnet._errors import ConfigError

__all__ = [
    "Address",
    "check_tls_files",
    "grpc_target",
    "listen_error",
    "parse_address",
    "parse_addresses",
    "parse_port",
    "read_pem",
]

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


def _must(option: str) -> str:
    return f"{option} must be" if option else "expected"


def _pre(option: str) -> str:
    return f"{option}: " if option else ""


@dataclass(frozen=True)
class Address:
    """A server address: ``family`` is ``ipv4``, ``ipv6``, ``dns`` or ``unix`` (``host`` is
    then the socket path and ``port`` is ``None``)."""

    family: str
    host: str
    port: int | None

    @property
    def target(self) -> str:
        """The address as gRPC takes it: ``10.0.0.1:8001``, ``[::1]:8001``, ``unix:/run/s``."""
        if self.family == "unix":
            return f"unix:{self.host}"
        if self.family == "ipv6":
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.target


def parse_port(value: str | int, *, option: str = "--port", allow_zero: bool = True) -> int:
    """A TCP port number: 0..65535 (0: any free port) or 1..65535 without ``allow_zero``."""
    low = 0 if allow_zero else 1
    try:
        port = int(str(value).strip(), 10)
    except ValueError:
        raise ConfigError(f"{_must(option)} a port number ({low}-65535), got {value!r}") from None
    if not low <= port <= 65535:
        raise ConfigError(f"{_must(option)} a port number ({low}-65535), got {port}")
    return port


def check_host(host: str, *, option: str = "--host") -> str:
    """An IP address or a host name (RFC 1123 characters); IPv6 with or without brackets."""
    text = host.strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", bare) or not _HOSTNAME.fullmatch(bare):
        raise ConfigError(f"{_pre(option)}{host!r} is neither an IP address nor a host name")
    return bare


def parse_address(text: str, *, option: str = "--server") -> Address:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH`` (also ``unix:///PATH``)."""
    s = text.strip()
    if s.startswith("unix:"):
        path = s[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(f"{_pre(option)}{text!r} names no socket path (unix:/PATH)")
        return Address("unix", path, None)
    example = "HOST:PORT, [IPV6]:PORT or unix:PATH"
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        if not sep:
            raise ConfigError(
                f"{option + ' must look like' if option else 'expected'} {example}, got {text!r}"
            )
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(
                f"{_pre(option)}{host!r} in {text!r} is not an IPv6 address"
            ) from None
        return Address(
            "ipv6",
            host,
            parse_port(port, option=f"{_pre(option)}in {text}, the port", allow_zero=False),
        )
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise ConfigError(
            f"{option + ' must look like' if option else 'expected'} {example}, got {text!r}"
        )
    if ":" in host:
        raise ConfigError(f"{_pre(option)}write an IPv6 address in brackets, [{host}]:{port}")
    port_n = parse_port(port, option=f"{_pre(option)}in {text}, the port", allow_zero=False)
    host = check_host(host, option=option)
    family = "ipv4" if re.fullmatch(r"[\d.]+", host) else "dns"
    return Address(family, host, port_n)


def parse_addresses(texts: str | Iterable[str], *, option: str = "--server") -> tuple[Address, ...]:
    """A comma-separated list (or a sequence) of :func:`parse_address` addresses."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    out = tuple(parse_address(t, option=option) for t in items if str(t).strip())
    if not out:
        raise ConfigError(f"{_pre(option)}no address given")
    return out


def grpc_target(addresses: Sequence[Address]) -> str:
    """The channel target for one address, or for several (``ipv4:``/``ipv6:`` lists,
    which gRPC balances with round_robin; host names or a mix cannot be listed)."""
    if len(addresses) == 1:
        return addresses[0].target
    families = {a.family for a in addresses}
    if len(families) != 1 or families & {"dns", "unix"}:
        raise ConfigError(
            "several --server addresses must all be IPv4 or all IPv6 HOST:PORT "
            "(round_robin over them); got " + ",".join(a.target for a in addresses)
        )
    family = families.pop()
    return f"{family}:" + ",".join(a.target for a in addresses)


def read_pem(path: str | Path | None, option: str) -> bytes | None:
    """The bytes of a PEM file, or ``None`` for no file; a missing, unreadable or
    non-PEM file is a :class:`ConfigError`."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{option}: cannot read {path}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{option}: {path} is not a PEM file")
    return data


def _check_certificates(path: str | Path, option: str) -> None:
    read_pem(path, option)
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as e:
        raise ConfigError(
            f"{option}: {path} holds no valid PEM certificate ({_reason(e)})"
        ) from None


def _reason(e: ssl.SSLError) -> str:
    return (e.reason or str(e)).lower().replace("_", " ")


def check_tls_files(
    *,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    ca: str | Path | None = None,
    prefix: str = "--tls",
) -> None:
    """Each file given is readable and parses (certificates as X.509, the key as a
    private key that matches ``cert``); ``cert`` and ``key`` go together."""
    if (cert is None) != (key is None):
        raise ConfigError(f"{prefix}-cert and {prefix}-key go together")
    if ca is not None:
        _check_certificates(ca, f"{prefix}-ca")
    if cert is None:
        return
    _check_certificates(cert, f"{prefix}-cert")
    if b"PRIVATE KEY-----" not in (read_pem(key, f"{prefix}-key") or b""):
        raise ConfigError(f"{prefix}-key: {key} holds no PEM private key")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        raise ConfigError(
            f"{prefix}-key: {key} is not a valid private key for {cert} ({_reason(e)})"
        ) from None


def listen_error(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on, in a few words (for the message when
    gRPC, which says only "failed to bind", refuses it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {host!r}: {e.strerror}"
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} is in use"
            return e.strerror or str(e)
    return "the address was refused"
