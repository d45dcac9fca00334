"""The shared torch-free helpers: the table formatter and the shape parser."""

from __future__ import annotations

import argparse

import pytest

from splitnet._errors import SplitnetError
from splitnet._shapes import ShapeError, parse_shape
from splitnet._table import TableError, format_table, human_bytes
from splitnet.cli._args import input_shape


def test_text_table_pads_and_aligns_columns():
    text = format_table(["name", "kB"], [["a", "1.5"], ["bb", "12.0"]], align="lr")
    assert text.splitlines() == ["name    kB", "----  ----", "a      1.5", "bb    12.0"]


def test_text_table_strips_trailing_blanks_of_left_columns():
    text = format_table(["a", "b"], [["x", ""], ["yy", "z"]])
    assert text.splitlines()[2] == "x"


def test_markdown_table_rule_carries_alignment():
    text = format_table(["name", "kB"], [["a", "1.5"]], align="lr", style="markdown")
    assert text.splitlines() == ["| name | kB |", "|---|---:|", "| a | 1.5 |"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": [["only one"]]},
        {"rows": [], "align": "lrx"},
        {"rows": [], "align": "l"},
        {"rows": [], "style": "html"},
    ],
)
def test_table_rejects_bad_rows_alignment_and_style(kwargs):
    with pytest.raises(TableError):
        format_table(["a", "b"], **kwargs)
    assert issubclass(TableError, SplitnetError)


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


@pytest.mark.parametrize(
    "text, dims, shape",
    [
        ("3x256x1600", 3, (3, 256, 1600)),
        (" 1 × 64 X 96 ", 3, (1, 64, 96)),
        ("128,800", 2, (128, 800)),
    ],
)
def test_parse_shape(text, dims, shape):
    assert parse_shape(text, dims=dims, example="e", labels="l") == shape


@pytest.mark.parametrize("text", ["", "3x256", "3x256x1600x2", "3xax5", "0x4x4", "-1x4x4", "3x4x"])
def test_parse_shape_rejects_bad_input(text):
    with pytest.raises(ShapeError, match=r"must look like 3x256x1600 \(C x H x W\), got"):
        parse_shape(text, dims=3, example="3x256x1600", labels="C x H x W")


def test_parse_shape_minimum_is_in_the_message():
    with pytest.raises(ShapeError, match=r"\(H x W >= 8\), got '4x800'"):
        parse_shape("4x800", dims=2, minimum=8, example="128x800", labels="H x W")


def test_cli_input_shape_names_the_option():
    assert input_shape("3x64x64") == (3, 64, 64)
    with pytest.raises(argparse.ArgumentTypeError, match="--input must look like 3x256x1600"):
        input_shape("3x64")


def test_data_size_uses_the_same_parser():
    from splitnet.data import DataError, open_dataset

    with pytest.raises(
        DataError, match=r"--data option size must look like 128x800 \(H x W >= 8\)"
    ):
        open_dataset("synthetic:n=2,size=4x800", subset="all")
