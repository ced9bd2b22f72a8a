"""The scanner's own reader of plain zip central directories against ``zipfile``: where it answers, it
gives exactly zipfile's entries; anything unusual is left to zipfile (None)."""

from __future__ import annotations

import io
import random
import zipfile

import pytest

from bastion.scan.archives import plain_directory

from . import malicious
from .test_fuzz import SEEDS, mutate


def _zipfile_entries(data: bytes) -> list[tuple[object, ...]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except Exception:  # zipfile refuses it: the plain reader must have declined too
        return None
    return [(i.filename, i.header_offset, i.compress_type, i.flag_bits, i.compress_size, i.file_size, i.CRC)
            for i in infos]


def _ours(data: bytes) -> list[tuple[object, ...]] | None:
    entries = plain_directory(data)
    if entries is None:
        return None
    return [(e.name, e.offset, e.method, e.flags, e.csize, e.usize, e.crc) for e in entries]


def _archives() -> list[bytes]:
    out = [c.data for c in malicious.all_cases(full=False) if c.data[:2] == b"PK" or c.container.endswith("zip")]
    out += [data for kind, data in SEEDS.values() if kind == "zip"]
    out.append(malicious.torch_zip(b"\x80\x02N.", prefix="odd"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", "x" * 100)
        zf.writestr(zipfile.ZipInfo("b/"), "")
        zf.writestr("é.pkl", b"\x80\x02N.")
        zf.comment = b"with a comment"
    out.append(buf.getvalue())
    buf = io.BytesIO()
    # a zip64 extra field in the directory
    with zipfile.ZipFile(buf, "w", allowZip64=True) as zf, zf.open("big", "w", force_zip64=True) as fh:
        fh.write(b"\x80\x02N.")
    out.append(buf.getvalue())
    return out


ARCHIVES = _archives()


def test_plain_reader_reads_torch_save_archives() -> None:
    torch_zip = SEEDS["torch_zip_benign"][1]
    assert _ours(torch_zip) is not None and _ours(torch_zip) == _zipfile_entries(torch_zip)


@pytest.mark.timeout(120)
def test_plain_reader_agrees_with_zipfile() -> None:
    answered = 0
    for data in ARCHIVES:
        ours = _ours(data)
        if ours is not None:
            answered += 1
            assert ours == _zipfile_entries(data)
    assert answered > len(ARCHIVES) // 2


@pytest.mark.timeout(120)
def test_plain_reader_agrees_with_zipfile_on_mutants() -> None:
    rng = random.Random(5)
    answered = 0
    for _ in range(6000):
        data = rng.choice(ARCHIVES)
        for _ in range(rng.randint(1, 3)):
            data = mutate(rng, data)
            if rng.random() < 0.5 and len(data) > 120:  # aim at the directory and end records
                pos = rng.randrange(len(data) - 120, len(data))
                data = data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1:]
        ours = _ours(data)
        if ours is not None:
            answered += 1
            assert ours == _zipfile_entries(data), data
    assert answered > 100
