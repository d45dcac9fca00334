"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import json

from splitnet._errors import ConfigError
from splitnet._shapes import ShapeError, parse_shape

# the largest --input accepted: 2**28 elements, 1 GiB per float32 frame (a 4K RGB frame
# has 2.5e7); past it the model's activations cannot fit in memory anyway
MAX_INPUT_ELEMENTS = 1 << 28


def split_point(text: str) -> int | str:
    """A ``--split``: an index (``"7"``, ``"-1"``) or a split point's name."""
    return int(text) if text.lstrip("-").isdigit() else text


def add_model_and_input(parser: argparse.ArgumentParser) -> None:
    """The ``MODEL --input CxHxW`` pair that the model commands share."""
    parser.add_argument("model", help="a registered model name (splitnet models)")
    parser.add_argument(
        "--input",
        required=True,
        type=input_shape,
        metavar="CxHxW",
        help="input shape, e.g. 3x256x1600",
    )


def input_shape(text: str) -> tuple[int, int, int]:
    """``"3x256x1600"`` -> ``(3, 256, 1600)`` (channels x height x width)."""
    try:
        shape = parse_shape(text, dims=3, example="3x256x1600", labels="C x H x W")
    except ShapeError as e:
        raise argparse.ArgumentTypeError(f"--input {e}") from None
    c, h, w = shape
    if c * h * w > MAX_INPUT_ELEMENTS:
        raise argparse.ArgumentTypeError(
            f"--input {text} has {c * h * w:.3g} elements; at most {MAX_INPUT_ELEMENTS:,} "
            f"({MAX_INPUT_ELEMENTS * 4 >> 30} GiB per float32 frame)"
        )
    return c, h, w


def _net_type(check, *args, **kw):
    """An argparse ``type=`` from a :mod:`splitnet.wire._net` check (its ConfigError
    becomes argparse's one-line usage error)."""

    def convert(text: str):
        try:
            return check(text, *args, **kw)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(check, "__name__", "value")
    return convert


def port(text: str) -> int:
    """``--port``: 0..65535 (0: a free port)."""
    from splitnet.wire._net import parse_port

    return _net_type(parse_port, option="")(text)


def port_or_off(text: str) -> int:
    """``--metrics-port``: 0..65535, or -1 for off."""
    from splitnet.wire._net import parse_port

    return -1 if str(text).strip() == "-1" else _net_type(parse_port, option="")(text)


def server_list(text: str) -> list[str]:
    """``"10.0.0.1:8001,[::1]:8001,unix:/run/s"`` -> the addresses, each checked."""
    from splitnet.wire._net import parse_addresses

    return [a.target for a in _net_type(parse_addresses, option="")(text)]


def host(text: str) -> str:
    """``--host``: an IP address or a host name."""
    from splitnet.wire._net import check_host

    return _net_type(check_host, option="")(text)


def pem_file(text: str) -> str:
    """A TLS file option: readable and PEM (the pair is checked by ``check_tls_files``)."""
    from splitnet.wire._net import read_pem

    _net_type(read_pem, "file")(text)
    return text


def writable_file(path: str | None, option: str) -> None:
    """An output file whose folder exists: checked before the work that would fill it."""
    from pathlib import Path

    if path in (None, "-"):
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"{option}: folder {parent} does not exist")


def int_list(text: str) -> list[int]:
    """``"16,8,4"`` -> ``[16, 8, 4]``."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def positive_int(text: str) -> int:
    """``"2"`` -> ``2``; anything but an integer >= 1 is a usage error."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def float_list(text: str) -> list[float]:
    """``"10,12.5"`` -> ``[10.0, 12.5]``."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def key_value(text: str) -> tuple[str, object]:
    """``"width=0.25"`` -> ``("width", 0.25)``; values are parsed as JSON when they can be."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed: object = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model-arg KEY=VALUE`` (repeatable): extra keywords of the model's builder."""
    parser.add_argument(
        "--model-arg",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="extra model builder argument, repeatable (e.g. width=0.25)",
    )


def name_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def apply_config_file(
    parser: argparse.ArgumentParser, argv_args: argparse.Namespace, path: str
) -> argparse.Namespace:
    """Fills the options not given on the command line from a YAML file whose keys
    are the long option names (``max-batch: 8`` or ``max_batch: 8``)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values")
    known = {
        a.dest: a for a in parser._actions if a.dest not in ("help", "config", "func", "parser")
    }
    for key, value in doc.items():
        dest = str(key).replace("-", "_")
        if dest not in known:
            raise ConfigError(
                f"{path}: unknown option {key!r}; options: {', '.join(sorted(known))}"
            )
        action = known[dest]
        if getattr(argv_args, dest) != action.default:
            continue  # the command line wins
        if isinstance(value, list) and action.type in (name_list, server_list):
            value = ",".join(map(str, value))
        if action.type in (port, port_or_off) and isinstance(value, int):
            value = str(value)
        if action.type is not None and isinstance(value, str):
            try:
                value = action.type(value)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"{path}: {key}: {e}") from None
        setattr(argv_args, dest, value)
    return argv_args


def require(args: argparse.Namespace, *names: str) -> None:
    """Options that must be given, on the command line or in ``--config``."""
    missing = [n for n in names if getattr(args, n, None) in (None, [], "")]
    if missing:
        raise ConfigError(
            f"missing option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}"
        )
