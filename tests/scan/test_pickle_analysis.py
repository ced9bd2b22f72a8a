"""The symbolic pickle machine: what it sees imported and called, on hand-built and dumped pickles."""

from __future__ import annotations

import collections
import pickle

import pytest

from bastion.scan import Policy, Severity, scan_bytes
from bastion.scan.pickle_vm import analyze_stream

from .conftest import RunsSystem, proto4_stack_global, rules, worst


@pytest.mark.parametrize("protocol", range(6))
def test_dumped_reduce_to_os_system_is_critical_in_every_protocol(protocol: int) -> None:
    data = pickle.dumps({"weights": [1.0, 2.0], "hook": RunsSystem()}, protocol=protocol)
    findings = scan_bytes(data, "evil.pkl")
    crit = [f for f in findings if f.severity == Severity.CRITICAL]
    assert len(crit) == 1
    assert crit[0].rule_id == "BASTION-PICKLE-DANGEROUS"
    assert crit[0].global_name in {"posix.system", "nt.system"}
    assert "echo pwned" in crit[0].message and crit[0].message.startswith("calls")
    assert crit[0].path == "evil.pkl" and "opcode" in crit[0].location


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_is_clean_in_every_protocol(protocol: int) -> None:
    obj = {"a": [1, 2.5, "x", b"y", None, True], "s": {1, 2}, "f": frozenset({3}), "t": (1, (2,)),
           "od": collections.OrderedDict(b=1), "c": complex(1, 2), "ba": bytearray(b"zz"), "sl": slice(1, 2)}
    assert scan_bytes(pickle.dumps(obj, protocol=protocol)) == []


def test_protocol0_global_and_inst() -> None:
    glob = b"cos\nsystem\n(S'ls'\ntR."
    inst = b"(S'ls'\nios\nsystem\n."
    for data in (glob, inst):
        f = scan_bytes(data)
        assert [x.global_name for x in f] == ["os.system"]
        assert "'ls'" in f[0].message


def test_stack_global_with_names_from_the_memo() -> None:
    f = scan_bytes(proto4_stack_global("subprocess", "getoutput", "id"))
    assert rules(f) == {"BASTION-PICKLE-DANGEROUS"}
    assert f[0].global_name == "subprocess.getoutput" and "'id'" in f[0].message


def test_stack_global_with_computed_name_is_dynamic() -> None:
    # module name produced by a call (str.join) rather than a constant
    data = (b"\x80\x04\x8c\x08builtins\x8c\x03str\x93\x8c\x02os\x85R\x8c\x06system\x93\x8c\x02ls\x85R.")
    f = scan_bytes(data)
    assert "BASTION-PICKLE-DYNAMIC-GLOBAL" in rules(f)
    assert worst(f) == Severity.CRITICAL


def test_obj_and_newobj_ex_are_calls() -> None:
    obj = b"\x80\x02(cos\nsystem\nX\x02\x00\x00\x00lso."
    newobj_ex = b"\x80\x04csubprocess\nPopen\n\x8c\x02ls\x85}\x92."
    for data in (obj, newobj_ex):
        f = scan_bytes(data)
        assert worst(f) == Severity.CRITICAL
        assert f[0].message.startswith("calls")


def test_build_on_a_global_is_monkey_patching() -> None:
    # BUILD (None, {"x": 1}) on the class collections.OrderedDict itself
    data = b"\x80\x02ccollections\nOrderedDict\nN}X\x01\x00\x00\x00xK\x01s\x86b."
    assert "BASTION-PICKLE-BUILD-GLOBAL" in rules(scan_bytes(data))


def test_getattr_chain_reaches_the_real_target() -> None:
    # getattr(torch.serialization's neighbour collections, "system") style: getattr(<os module>, "system")
    data = (b"\x80\x02cbuiltins\ngetattr\n(cposixpath\nos\nX\x06\x00\x00\x00systemtR(X\x02\x00\x00\x00lstR.")
    f = scan_bytes(data)
    names = {x.global_name for x in f}
    assert {"builtins.getattr", "posixpath.os.system"} <= names
    assert "BASTION-PICKLE-COMPUTED-CALL" not in rules(f)  # the call target was resolved, not opaque


def test_submodule_names_are_denied() -> None:
    for mod, name in [("numpy.testing._private.utils", "runstring"), ("torch._dynamo.guards", "GuardBuilder"),
                      ("torch._utils", "os.system"), ("__builtin__", "eval"), ("posix", "system")]:
        f = scan_bytes(f"c{mod}\n{name}\n(S'x'\ntR.".encode())
        assert worst(f) == Severity.CRITICAL, (mod, name)


def test_unknown_global_is_high_and_configurable() -> None:
    data = b"cmypkg.models\nNet\n)R."
    assert rules(scan_bytes(data)) == {"BASTION-PICKLE-UNKNOWN-GLOBAL"}
    assert worst(scan_bytes(data)) == Severity.HIGH
    pol = Policy.default().extended(allow=["mypkg.models:Net"])
    assert scan_bytes(data, policy=pol) == []
    pol2 = Policy.default().extended(unknown_severity=Severity.MEDIUM)
    assert worst(scan_bytes(data, policy=pol2)) == Severity.MEDIUM


def test_ext_opcodes_are_reported() -> None:
    data = b"\x80\x02\x82\x07)R."
    f = scan_bytes(data)
    assert {"BASTION-PICKLE-EXT", "BASTION-PICKLE-COMPUTED-CALL"} <= rules(f)


def test_concatenated_pickles_are_all_scanned() -> None:
    data = pickle.dumps([1, 2]) + pickle.dumps({"x": RunsSystem()}, protocol=2)
    f = scan_bytes(data)
    assert worst(f) == Severity.CRITICAL
    assert f[0].location.startswith("pickle 2")


def test_truncated_pickle_after_a_dangerous_call_reports_both() -> None:
    data = pickle.dumps(RunsSystem(), protocol=2)[:-1]  # drop STOP: REDUCE already ran
    assert rules(scan_bytes(data)) == {"BASTION-PICKLE-DANGEROUS", "BASTION-PARSE"}


def test_truncated_benign_pickle_is_never_clean() -> None:
    data = pickle.dumps(list(range(100)), protocol=4)
    f = scan_bytes(data[: len(data) // 2])
    assert rules(f) == {"BASTION-PARSE"} and worst(f) == Severity.HIGH


def test_unknown_opcode_is_a_parse_finding() -> None:
    f = scan_bytes(b"\x80\x04K\x01\xff.")
    assert "BASTION-PARSE" in rules(f)


def test_opcode_limit_stops_pickle_bombs() -> None:
    pol = Policy.default().extended(limits={"max_opcodes": 50})
    data = pickle.dumps(list(range(1000)), protocol=0)
    assert rules(scan_bytes(data, policy=pol)) == {"BASTION-LIMIT"}


def test_memo_read_before_write_is_a_parse_error() -> None:
    assert "BASTION-PARSE" in rules(scan_bytes(b"\x80\x02h\x05."))


def test_nested_pickle_in_load_from_bytes_is_scanned() -> None:
    inner = pickle.dumps(RunsSystem(), protocol=2)
    for protocol in (2, 3):  # protocol 2 writes bytes as _codecs.encode(str, "latin1")
        data = pickle.dumps(inner, protocol=protocol)
        outer = b"\x80\x02ctorch.storage\n_load_from_bytes\n" + data[2:-1] + b"\x85R."
        f = scan_bytes(outer)
        assert {"BASTION-PICKLE-NESTED", "BASTION-PICKLE-DANGEROUS"} <= rules(f)
        assert any(x.global_name == "posix.system" or x.global_name == "nt.system" for x in f)


def test_text_that_is_not_a_pickle_is_ignored() -> None:
    assert scan_bytes(b"import os\nos.system('x')\n") == []
    assert scan_bytes(b"hello world, just a README\n") == []


def test_analyze_stream_counts_pickles() -> None:
    res = analyze_stream(pickle.dumps(1) + pickle.dumps(2) + pickle.dumps(3), Policy.default())
    assert res.pickles == 3 and res.is_pickle and not res.failed


@pytest.mark.parametrize("data", [
    b"\x80\x07K\x01.",  # protocol 7 does not exist
    b"\x80\x05\x95\xff\x00\x00\x00\x00\x00\x00\x00K\x01.",  # FRAME longer than the data
    b"\x80\x02cbuiltins\nset\n]R.",  # REDUCE with a list, not a tuple, of arguments
    b"\x80\x02}]K\x01s.",  # a list as a dict key
    b"\x80\x02)K\x01a.",  # APPEND to a tuple
    b"\x80\x02]G?\xf0\x00\x00\x00\x00\x00\x00K\x01s.",  # list[1.0] = 1
])
def test_what_the_real_unpickler_rejects_is_a_parse_finding(data: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any error: the point is that pickle refuses it
        pickle.loads(data)
    assert "BASTION-PARSE" in rules(scan_bytes(data))


def test_quick_probe_rejection_changes_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blobs a probe skips unplayed are exactly those that playing would not call a pickle."""
    import random

    from bastion.scan import pickle_vm

    rng = random.Random(3)
    alphabet = b"()]}N.cti\x93\x94qhKJ\x85\x86R0123456789abcdefXU\x8c\n \x80\x04lsue"
    blobs = [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(3000)]
    blobs += [b"1", b"64", b"little", b"3\n", b"08494888479650487350", b"(((((((((((((((((((((((((((((((((("]
    blobs += [pickle.dumps([1, 2, 3] * 12, proto)[:k] for proto in (0, 2) for k in range(1, 60)]
    # blobs that start with an opcode that fails on an empty stack, short and long
    blobs += [code + bytes(rng.choice(alphabet) for _ in range(n)) for code in pickle_vm.FAILS_FIRST
              for n in (0, 3, 40)]
    policies = [Policy.default(), Policy.default().extended(limits={"max_opcodes": 3, "max_payload_bytes": 2}),
                Policy.default().extended(limits={"max_opcodes": 1, "max_payload_bytes": 1})]
    for pol in policies:
        for evidence in (32, None, 1):
            quick = [analyze_stream(b, pol, probe=True, evidence_opcodes=evidence) for b in blobs]
            monkeypatch.setattr(pickle_vm, "_QUICK_PROBE_MAX", -1)
            slow = [analyze_stream(b, pol, probe=True, evidence_opcodes=evidence) for b in blobs]
            monkeypatch.undo()
            for b, q, s in zip(blobs, quick, slow, strict=True):
                assert (q.is_pickle, q.findings, q.end, q.pickles) == (s.is_pickle, s.findings, s.end, s.pickles), b


def test_fails_first_opcodes_fail_on_an_empty_machine() -> None:
    """Exactly the opcodes of FAILS_FIRST stop a pickle at its first opcode, whatever follows."""
    from bastion.scan import pickle_vm
    from bastion.scan.opcodes import NAMES

    for code in NAMES:
        res = analyze_stream(bytes([code]) + b"NN.", Policy.default())
        fails = res.failed and res.findings[-1][2] == "opcode 1 (offset 0x1)"
        assert fails == (bytes([code]) in pickle_vm.FAILS_FIRST), NAMES[code]
