"""The compiled policy matcher and verdict cache give exactly the verdicts of a plain scan over every pattern."""

from __future__ import annotations

import random

from bastion.scan import Policy, Severity
from bastion.scan.policy import _IDENT, DANGEROUS_ATTRS, DEFAULT_ALLOW, Pattern, _reachable_pairs, normalize


def _reference(policy: Policy, module: str, name: str) -> tuple[Severity | None, str, set[str]]:
    """The verdict from first principles: every pattern tried on every spelling (no index, no cache).

    Returns severity, rule id and the deny patterns that may be named as the reason (the worst ones).
    """
    mod, nm = normalize(module, name)
    if not _IDENT.match(mod) or not _IDENT.match(nm):
        return policy.unknown_severity, "BASTION-PICKLE-UNKNOWN-GLOBAL", set()
    matches = [(sev, str(pat)) for pm, pn in {(module, name), (mod, nm), *_reachable_pairs(mod, nm)}
               for pat, sev in policy.deny if pat.matches_deny(pm, pn)]
    allowed = [pat for pat in policy.allow if pat.matches_allow(mod, nm)]
    if matches and not any(pat.exact for pat in allowed):
        worst = max(s for s, _ in matches)
        return worst, "BASTION-PICKLE-DANGEROUS", {p for s, p in matches if s == worst}
    builtin = {Pattern.parse(p) for p in DEFAULT_ALLOW}
    if matches and not any(pat.exact and pat in builtin for pat in allowed):
        return Severity.INFO, "BASTION-PICKLE-ALLOWED-BY-POLICY", set()  # a user's carve-out: reported
    if allowed:
        return None, "", set()
    if any(p in DANGEROUS_ATTRS for p in mod.split(".") + nm.split(".")):
        return Severity.CRITICAL, "BASTION-PICKLE-DANGEROUS", set()
    return policy.unknown_severity, "BASTION-PICKLE-UNKNOWN-GLOBAL", set()


def _names(policy: Policy, rng: random.Random) -> list[tuple[str, str]]:
    """Globals around every pattern: the pattern itself, submodules, dotted names, near misses, py2 spellings."""
    words = ["system", "Tensor", "Linear", "load", "x", "_private", "Foo", "eval", "a.b", "join", "Size",
             "__globals__", "float16", "int8", "OrderedDict", "run", "getattr", "prod"]
    out: list[tuple[str, str]] = [("__builtin__", "eval"), ("copy_reg", "_reconstructor"), ("os", ""),
                                  ("", "x"), ("a b", "c"), ("torch", "load"), ("numpy", "prod.a"),
                                  ("torch._utils", "os.system"), ("__builtin__", "set"), ("UserDict", "UserDict")]
    pats = [p for p in policy.allow] + [p for p, _ in policy.deny]
    for pat in pats:
        mod = pat.module.replace("*", rng.choice(["", "x", "nn", "a.b"])).replace("?", "q")
        mod = mod.replace("[A-Z]", "B")
        name = pat.name.replace("*", rng.choice(["", "Z", "tensor", "a.b"])).replace("[A-Z]", rng.choice("Aa"))
        out += [(mod, name), (mod + ".sub", name), (mod, name + ".attr"), (mod, rng.choice(words)),
                (mod.split(".")[0], f"{mod.partition('.')[2] or 'x'}.{name}"), (mod + "x", name),
                (rng.choice(["torch", "numpy", "os", "sklearn.linear_model"]), f"{name}.{rng.choice(words)}")]
    return out


def test_compiled_matcher_agrees_with_a_plain_scan_of_every_pattern() -> None:
    rng = random.Random(7)
    policies = [Policy.default(),
                Policy.default().extended(allow=["mypkg.*:Net?", "os:getcwd", "evil:[a-c]*"],
                                          deny=[("mypkg.un*:*", Severity.MEDIUM), ("torch.nn.*:Bad", "high")])]
    for policy in policies:
        names = _names(policy, rng)
        # the reference is slow (every pattern, every spelling): a fixed sample keeps the test quick
        for module, name in names[:10] + rng.sample(names[10:], 500):
            sev, rule, reasons = _reference(policy, module, name)
            got = policy.verdict(module, name)
            assert (got.severity, got.rule_id) == (sev, rule), (module, name, got)
            if reasons:
                assert got.reason.removeprefix("denied by ") in reasons, (module, name, got.reason, reasons)
            assert policy.verdict(module, name) is got  # remembered


def test_default_policy_is_built_once_and_extensions_are_independent() -> None:
    assert Policy.default() is Policy.default()
    ext = Policy.default().extended(allow=["os:system"])
    # an exact allow carves it out, but a user's carve-out of a denied name is still reported, at INFO
    assert (ext.verdict("os", "system").severity, ext.verdict("os", "system").rule_id) == \
        (Severity.INFO, "BASTION-PICKLE-ALLOWED-BY-POLICY")
    assert Policy.default().verdict("os", "system").severity == Severity.CRITICAL
    assert ext == Policy.default().extended(allow=["os:system"])  # the cache is not part of the value
    assert Pattern.parse("os:system") in ext.allow
