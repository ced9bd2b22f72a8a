"""Coverage-guided fuzzing of the scanner with atheris (not run by the tests).

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz_scan.py -atheris_runs=200000 -max_len=4096 [CORPUS_DIR ...]

Seeds: the benign and malicious corpora (``tests/scan``), written to a temp dir unless corpus folders
are given. Each input is scanned with :func:`bastion.scan.scan_bytes`; the harness fails on

- any exception escaping the scanner (it must report, never raise);
- a file that still starts with a pickle PROTO opcode, a zip local header, the NumPy magic or a
  safetensors header, that the scanner reports with no finding at all although the format's own reader
  (pickle with every global stubbed out, zipfile reading every member, np.load, safetensors) rejects it: a file it
  could not parse must never come out clean.

Hangs are caught by libFuzzer's ``-timeout`` (default 1200 s; pass e.g. ``-timeout=5``).
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _seed_dir() -> str:
    from tests.scan import benign, malicious

    tmp = Path(tempfile.mkdtemp(prefix="bastion-fuzz-seeds-"))
    for case in malicious.all_cases(full=False):
        if len(case.data) <= 1 << 16:
            (tmp / case.name).write_bytes(case.data)
    for bcase in benign.all_cases():
        if len(bcase.data) <= 1 << 16:
            (tmp / bcase.name).write_bytes(bcase.data)
    return str(tmp)


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["bastion"]):
        from bastion.scan import scan_bytes
    from tests.scan.test_fuzz import REFERENCE, _keeps_magic, _pickle_parses

    def zip_parses(data: bytes) -> bool:
        # any zip (npz, .keras, checkpoints): every member reads back with a good CRC, pickles run to STOP.
        # Tensor storages (``.../data/<n>``) are raw numbers that torch.load reads without checking their
        # CRC (checked: a flipped byte loads as a changed number); the scanner never reads them, by design
        # (0.004 s/GB), so a bad CRC there is not a file it "could not parse".
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = []
                for info in zf.infolist():
                    if re.search(r"(^|/)\.?data/\d+$", info.filename):
                        continue
                    members.append((info.filename, zf.read(info)))
        except Exception:
            return False
        return bool(members) and all(_pickle_parses(b) for n, b in members if n.endswith(".pkl"))

    reference = {**REFERENCE, "zip": zip_parses}

    def kind_of(data: bytes) -> str | None:
        for kind in ("pickle", "zip", "npy", "safetensors"):
            if _keeps_magic(kind, data):
                return kind
        return None

    def one_input(data: bytes) -> None:
        findings = scan_bytes(data, name="fuzz")
        kind = kind_of(data)
        if kind is not None and not findings and not reference[kind](data):
            raise AssertionError(f"clean but unreadable {kind} file: {data[:64]!r}")

    argv = list(sys.argv)
    if not any(a.startswith("-artifact_prefix") for a in argv):
        argv.append(f"-artifact_prefix={tempfile.gettempdir()}/bastion-fuzz-")  # crashes land in /tmp
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(_seed_dir())
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
