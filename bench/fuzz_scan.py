"""Coverage-guided fuzzing of the scanner with atheris (not run by the tests).

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz_scan.py -atheris_runs=200000 -max_len=4096 [CORPUS_DIR ...]

Seeds: the benign and malicious corpora (``tests/scan``), written to a temp dir unless corpus folders
are given. Each input is scanned with :func:`bastion.scan.scan_bytes`; the harness fails on

- any exception escaping the scanner (it must report, never raise);
- a file that still starts with a pickle PROTO opcode, a zip local header, the NumPy magic or a
  safetensors header, that the scanner reports with no finding at all although the format's own reader
  (pickle with every global stubbed out, zipfile reading back every pickle member, np.load, safetensors)
  rejects it: a file it could not parse must never come out clean.

Hangs are caught by libFuzzer's ``-timeout`` (default 1200 s; pass e.g. ``-timeout=5``).
"""

from __future__ import annotations

import io
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
    from tests.scan.test_fuzz import REFERENCE, _keeps_magic, _StubUnpickler

    def _pickle_parses(data: bytes) -> bool:
        # encoding="latin1", as loaders of Python 2 and NumPy pickles pass: protocol-0/1 strings with
        # non-ASCII bytes are then data the loader reads, not a file nobody could load
        try:
            _StubUnpickler(io.BytesIO(data), encoding="latin1").load()
            return True
        except Exception:
            return False

    from bastion.scan.sniff import SAFETENSORS_MAX_HEADER

    # Only pickle members can run code, so the zip reference reads them back CRC-checked and plays them. A
    # bad CRC elsewhere (tensor storages, which torch.load reads without checking it, or metadata records)
    # changes data, not code, and the scanner does not read tensor bytes by design.
    def zip_parses(data: bytes) -> bool:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                pkls = [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
        except Exception:
            return False
        return all(_pickle_parses(b) for b in pkls)  # archives without pickles (npz, .keras) count as read

    reference = {**REFERENCE, "pickle": _pickle_parses, "zip": zip_parses}

    def kind_of(data: bytes) -> str | None:
        for kind in ("pickle", "zip", "npy"):
            if _keeps_magic(kind, data):
                return kind
        # safetensors' reader refuses a header length over its 100 MB limit before reading anything, so only
        # a plausible length (or the '{"' signature) makes a blob one it would start to parse
        if _keeps_magic("safetensors", data) and (
                int.from_bytes(data[:8], "little") <= SAFETENSORS_MAX_HEADER or data[8:10] == b'{"'):
            return "safetensors"
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
