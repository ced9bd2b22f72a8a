"""Reading files: small ones into memory, large ones through a map; both give scan_bytes' findings."""

from __future__ import annotations

from pathlib import Path

import pytest

import bastion.scan as scan
from bastion.scan import scan_bytes, scan_path

from . import malicious


@pytest.mark.parametrize("read_max", [1 << 30, 16])  # read into memory / mapped
def test_files_scan_like_their_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_max: int) -> None:
    monkeypatch.setattr(scan, "_READ_MAX", read_max)
    evil = malicious.assemble(malicious.Call(malicious.G("os", "system"), (malicious.CMD,)), 4)
    blobs = {"evil.pkl": evil, "evil.pt": malicious.torch_zip(evil), "tiny.pkl": b"N.", "empty.bin": b""}
    for name, data in blobs.items():
        path = tmp_path / name
        path.write_bytes(data)
        report = scan_path(path)
        assert report.findings == scan_bytes(data, str(path)), name
        assert report.files_scanned == 1 and report.bytes_scanned == len(data) and not report.errors


def test_unreadable_paths_are_errors(tmp_path: Path) -> None:
    report = scan_path(tmp_path / "missing.pkl")
    assert report.files_scanned == 0 and "no such file" in report.errors[0]
