"""The tail program is loaded only from a checksummed file inside the bundle (issue 13, item 7)."""

from __future__ import annotations

import json
import shutil

import pytest

from splitnet.bundle import BundleError, load_tail, read_manifest

pytestmark = pytest.mark.grpc


def _copy(repository, tmp_path):
    d = tmp_path / "bundle"
    shutil.copytree(repository / "unet", d)
    return d


def _edit(d, fn) -> None:
    doc = json.loads((d / "manifest.json").read_text())
    fn(doc)
    (d / "manifest.json").write_text(json.dumps(doc))


def test_a_tail_outside_the_bundle_is_refused(repository, tmp_path):
    d = _copy(repository, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(d / "tail.pt2", outside / "tail.pt2")
    _edit(d, lambda m: m["tail"].update(file="../elsewhere/tail.pt2"))
    with pytest.raises(BundleError, match=r"\.\./elsewhere/tail\.pt2.*leaves the bundle"):
        load_tail(d, verify=False)
    _edit(d, lambda m: m["tail"].update(file=str(outside / "tail.pt2")))
    with pytest.raises(BundleError, match="leaves the bundle"):
        read_manifest(d, verify=False)


def test_a_tail_without_a_checksum_is_refused_even_unverified(repository, tmp_path):
    d = _copy(repository, tmp_path)
    shutil.copy(d / "tail.pt2", d / "other.pt2")
    _edit(d, lambda m: m["tail"].update(file="other.pt2"))
    for verify in (True, False):
        with pytest.raises(BundleError, match="no checksum for the tail file other.pt2"):
            load_tail(d, verify=verify)


def test_a_tail_linked_out_of_the_bundle_is_refused(repository, tmp_path):
    d = _copy(repository, tmp_path)
    outside = tmp_path / "tail-elsewhere.pt2"
    (d / "tail.pt2").rename(outside)
    (d / "tail.pt2").symlink_to(outside)
    with pytest.raises(BundleError, match="leaves the bundle folder"):
        load_tail(d, verify=False)
    assert load_tail(repository / "unet") is not None
