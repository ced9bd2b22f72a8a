"""JUnit XML for an assessment: one test case per check, so any CI shows each check as a test."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bastion.assess.gate.checks import ERROR, FAIL, SKIP
from bastion.assess.gate.runner import Assessment


def to_junit(assessment: Assessment) -> str:
    outs = assessment.outcomes
    counts = {v: str(sum(o.verdict == v for o in outs)) for v in (FAIL, ERROR, SKIP)}
    suites = ET.Element("testsuites", name="bastion assess", tests=str(len(outs)), failures=counts[FAIL],
                        errors=counts[ERROR], skipped=counts[SKIP], time=f"{assessment.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="bastion.assess", tests=str(len(outs)), failures=counts[FAIL],
                          errors=counts[ERROR], skipped=counts[SKIP], time=f"{assessment.seconds:.3f}",
                          timestamp=assessment.started)
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="policy", value=assessment.policy.source)
    ET.SubElement(props, "property", name="budget", value=assessment.budget)
    ET.SubElement(props, "property", name="model", value=str(assessment.provenance.get("model", {}).get("path", "")))
    for o in outs:
        case = ET.SubElement(suite, "testcase", classname="bastion.assess", name=o.id, time=f"{o.seconds:.3f}")
        text = (f"{o.reason}\nfigure: {o.figure_text or '-'}; threshold: {o.threshold or '-'}; "
                f"ATLAS {o.info.atlas_technique}; NIST AI 100-2: {o.info.nist_class}")
        if o.verdict == FAIL:
            ET.SubElement(case, "failure", message=o.reason, type="GateFailed").text = text
        elif o.verdict == ERROR:
            ET.SubElement(case, "error", message=o.reason, type="CouldNotRun").text = text
        elif o.verdict == SKIP:
            ET.SubElement(case, "skipped", message=o.reason)
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
