"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import json

from splitnet._errors import ConfigError
from splitnet._shapes import ShapeError, parse_shape


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
        return parse_shape(text, dims=3, example="3x256x1600", labels="C x H x W")  # type: ignore[return-value]
    except ShapeError as e:
        raise argparse.ArgumentTypeError(f"--input {e}") from None


def int_list(text: str) -> list[int]:
    """``"16,8,4"`` -> ``[16, 8, 4]``."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


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
        if isinstance(value, list) and action.type is name_list:
            value = ",".join(map(str, value))
        if action.type is not None and isinstance(value, str):
            value = action.type(value)
        setattr(argv_args, dest, value)
    return argv_args


def require(args: argparse.Namespace, *names: str) -> None:
    """Options that must be given, on the command line or in ``--config``."""
    missing = [n for n in names if getattr(args, n, None) in (None, [], "")]
    if missing:
        raise ConfigError(
            f"missing option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}"
        )
