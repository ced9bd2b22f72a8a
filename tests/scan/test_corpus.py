"""The adversarial corpus against the scanner: every published bypass flagged, every ordinary file clean.

The corpus is generated once per session (``malicious.py``, ``benign.py``) into a temporary folder and
scanned through ``scan_path``, so the file extension plays its (lack of) part exactly as for a user.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bastion.scan import Finding, Severity, scan_path

from . import benign, malicious

#: (bypass class -> why) where the scanner reports the file at HIGH (blocked by the default threshold)
#: but not at CRITICAL although the payload runs code; each is a denylist entry the scanner still lacks
KNOWN_NOT_CRITICAL: dict[str, str] = {}  # all fixed by the scanner (pkgutil, idlelib, pydoc, uuid...)

#: (bypass class -> why) files the scanner does not flag at HIGH at all
KNOWN_MISSES: dict[str, str] = {}  # none left: the oversized safetensors header is sniffed now

#: modules a payload names that nothing in the test run imports otherwise: generating must not import them
NEVER_IMPORTED = ("idlelib.run", "_pyrepl.pager", "ensurepip", "venv", "lib2to3", "_osx_support", "imaplib",
                  "torch.utils.bottleneck.__main__", "mlflow", "fickling")


@pytest.fixture(scope="session")
def malicious_scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[malicious.Case, list[Finding]]]]:
    before = set(sys.modules)
    written = malicious.write_corpus(tmp_path_factory.mktemp("malicious"), full=False)
    imported = sorted(m for m in NEVER_IMPORTED if m in sys.modules and m not in before)
    assert not imported, f"building the corpus imported {imported}"
    by_class: dict[str, list[tuple[malicious.Case, list[Finding]]]] = defaultdict(list)
    for case, path in written:
        by_class[case.bypass].append((case, scan_path(path).findings))
    return by_class


def _bypass_classes() -> list[str]:
    names = [p.name for p in malicious.payloads()]
    names += sorted({c.bypass for c in (*malicious.zip_tamper_cases(), *malicious.keras_cases(),
                                        *malicious.onnx_cases(), *malicious.safetensors_cases(),
                                        *malicious.issue9_cases())})
    return names


def _params(known: dict[str, str]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.xfail(reason=f"scanner miss: {known[n]}", strict=False))
            if n in known else n for n in _bypass_classes()]


def _describe(findings: list[Finding]) -> str:
    return "; ".join(f"{f.rule_id}/{f.severity.name} {f.global_name or ''}" for f in findings) or "no findings"


@pytest.mark.parametrize("bypass", _params(KNOWN_MISSES))
def test_every_malicious_file_is_flagged_high(bypass: str,
                                              malicious_scans: dict[str, list[tuple[malicious.Case, list[Finding]]]]
                                              ) -> None:
    cases = malicious_scans[bypass]
    assert cases, f"no corpus file for {bypass}"
    missed = [f"{c.name}: {_describe(fs)}" for c, fs in cases
              if max((f.severity for f in fs), default=Severity.INFO) < Severity.HIGH]
    assert not missed, "\n".join(missed)


@pytest.mark.parametrize("bypass", _params(KNOWN_NOT_CRITICAL))
def test_code_execution_payloads_are_critical(bypass: str,
                                              malicious_scans: dict[str, list[tuple[malicious.Case, list[Finding]]]]
                                              ) -> None:
    cases = [(c, fs) for c, fs in malicious_scans[bypass] if c.expect == "critical"]
    missed = [f"{c.name}: {_describe(fs)}" for c, fs in cases
              if max((f.severity for f in fs), default=Severity.INFO) < Severity.CRITICAL]
    assert not missed, "\n".join(missed)


def test_corpus_covers_every_container_and_protocol() -> None:
    cases = malicious.all_cases(full=False)
    containers = {c.container for c in cases}
    for cname, _, _ in malicious.CONTAINERS:
        assert cname in containers
    assert {f"raw_p{p}" for p in malicious.PROTOCOLS} <= containers
    assert {"keras", "h5", "onnx", "safetensors"} <= containers


def test_generated_pickles_match_what_pickle_reads() -> None:
    """The assembler's output is real pickle: a harmless expression round-trips through pickle.loads."""
    import pickle

    value = {"a": [1, 2.5, "x\ny\\"], "b": (None, True, False), "c": b"\x00\xff", "n": 2**70}
    for proto in malicious.PROTOCOLS:
        assert pickle.loads(malicious.assemble(value, proto)) == value


@pytest.fixture(scope="session")
def benign_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[benign.BenignCase, Path]]:
    return benign.write_corpus(tmp_path_factory.mktemp("benign"))


def test_every_benign_file_is_clean(benign_files: list[tuple[benign.BenignCase, Path]]) -> None:
    assert len(benign_files) >= 20
    noisy = []
    for case, path in benign_files:
        report = scan_path(path)
        assert not report.errors, report.errors
        bad = [f for f in report.findings if f.severity >= Severity.LOW]
        if bad:
            noisy.append(f"{case.name}: {_describe(bad)}")
    assert not noisy, "\n".join(noisy)


def test_picklescan_catches_nothing_we_miss(
        malicious_scans: dict[str, list[tuple[malicious.Case, list[Finding]]]]) -> None:
    """Optional cross-check: a raw pickle picklescan calls dangerous is never below HIGH for Bastion."""
    scanner = pytest.importorskip("picklescan.scanner")
    import io

    for cases in malicious_scans.values():
        for case, findings in cases:
            if case.container != "raw_p4":
                continue
            try:
                res = scanner.scan_pickle_bytes(io.BytesIO(case.data), case.filename)
            except Exception:  # picklescan raising is its own miss, not ours
                continue
            if res.infected_files or res.issues_count:
                assert max((f.severity for f in findings), default=Severity.INFO) >= Severity.HIGH, case.name
