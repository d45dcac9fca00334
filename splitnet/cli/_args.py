"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import re


def input_shape(text: str) -> tuple[int, int, int]:
    """``"3x256x1600"`` -> ``(3, 256, 1600)`` (channels x height x width)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*[xX×,]\s*(\d+)\s*", text)
    if not m or min(int(g) for g in m.groups()) < 1:
        raise argparse.ArgumentTypeError(
            f"--input must look like 3x256x1600 (C x H x W), got {text!r}"
        )
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


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


def name_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]
