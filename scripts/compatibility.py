#!/usr/bin/env python3
"""Writes docs/compatibility.md, the compatibility ledger: Sluice beside Apache Kafka 4.

  scripts/compatibility.py            run everything and write the ledger
  scripts/compatibility.py --check    check the ledger is current: the API versions each
                                      broker serves now, and the list of scenarios, are
                                      what the ledger says (cheap: no scenario is run)

For every Kafka API, the versions each broker advertises (read with Kafka's own
kafka-broker-api-versions). For every scenario (each test of the client suites named
in SUITES, run once against Apache Kafka, tests/kafka/kafka.sh, and once against one
Sluice broker), the outcome on each: passed, or the first line of the failure. Where
the outcomes differ, docs/compatibility-notes.json says why; a difference without a
note is written as such, so the ledger never hides one.

The Sluice binary is $SLUICE_BIN, else target/release/sluice (as the client tests).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))
import conftest  # noqa: E402  (the brokers the client tests start)

LEDGER = ROOT / "docs" / "compatibility.md"
NOTES = ROOT / "docs" / "compatibility-notes.json"
KAFKA_SH = ROOT / "tests" / "kafka" / "kafka.sh"
SUITES = [
    "tests/clients/test_confluent_kafka.py",
    "tests/clients/test_kafka_python.py",
    "tests/clients/test_aiokafka.py",
    "tests/clients/test_kcat.py",
    "tests/clients/test_groups.py",
    "tests/clients/test_consumer_protocol.py",
    "tests/clients/test_committed_offsets.py",
    "tests/clients/test_transactions.py",
    "tests/clients/test_kafka_tools.py",
    "tests/clients/test_java_client.py",
    "tests/clients/test_streams.py",
    "tests/clients/test_connect.py",
]
# `Produce(0): 0 to 13 [usable: 13]`, `OffsetDelete(47): 0 [usable: 0]` (one version),
# `PushTelemetry(72): UNSUPPORTED`.
API_LINE = re.compile(r"^\s*(\w+)\((\d+)\): (?:(\d+)(?: to (\d+))?|UNSUPPORTED)")


def api_versions(bootstrap):
    out = subprocess.run([str(KAFKA_SH), "kafka-broker-api-versions", "--bootstrap-server",
                          bootstrap], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    apis = {}
    for line in out.splitlines():
        m = API_LINE.match(line)
        if m:
            name, key, lo, hi = m.groups()
            if lo is None:
                apis[(int(key), name)] = "—"
            else:
                apis[(int(key), name)] = f"{lo}–{hi}" if hi is not None else lo
    return apis


def scenarios():
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", *SUITES], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if "::" in line]


def run_scenarios(env_extra):
    with tempfile.TemporaryDirectory() as d:
        xml = Path(d) / "report.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-W", "ignore::DeprecationWarning", f"--junitxml={xml}", *SUITES],
                       cwd=ROOT, env={**os.environ, **env_extra}, capture_output=True,
                       timeout=3600)
        outcomes = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            path = case.get("classname", "").replace(".", "/")
            test_id = f"{path}.py::{case.get('name')}"
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            if case.find("skipped") is not None:
                outcomes[test_id] = "skipped"
            elif failure is None:
                outcomes[test_id] = "passed"
            else:
                message = (failure.get("message") or "failed").strip().splitlines()[0]
                outcomes[test_id] = "failed: " + message[:160]
        return outcomes


def api_section(kafka_apis, sluice_apis):
    rows = ["| key | API | Apache Kafka 4.4 | Sluice |", "|---|---|---|---|"]
    for key, name in sorted(set(kafka_apis) | set(sluice_apis)):
        rows.append(f"| {key} | {name} | {kafka_apis.get((key, name), '—')} | "
                    f"{sluice_apis.get((key, name), '—')} |")
    return "\n".join(rows)


def scenario_section(ids, kafka, sluice, notes):
    rows = ["| scenario | Apache Kafka 4.4 | Sluice | why they differ |", "|---|---|---|---|"]
    for test_id in ids:
        k, s = kafka.get(test_id, "not run"), sluice.get(test_id, "not run")
        why = "" if k == s else notes.get(test_id, "**unexplained difference**")
        cell = lambda v: v.replace("|", "\\|")  # noqa: E731
        rows.append(f"| `{test_id.removeprefix('tests/clients/')}` | {cell(k)} | {cell(s)} | "
                    f"{why} |")
    return "\n".join(rows)


HEADER = """# Compatibility ledger: Sluice beside Apache Kafka

Generated by `scripts/compatibility.py` (do not edit by hand; explanations of
differences live in `docs/compatibility-notes.json`). The test command checks that
the API versions and the list of scenarios below are current
(`scripts/compatibility.py --check`); rerun the script to refresh the outcomes.

Apache Kafka 4.4.0 runs from the Maven Central jars (`tests/kafka/kafka.sh`), one KRaft
node on loopback; Sluice is one broker on its embedded default. A version range is what
each broker advertises in ApiVersions (read with Kafka's `kafka-broker-api-versions`);
`—` means not served.
"""


def start_both():
    kafka = conftest.ApacheKafka()
    data = tempfile.mkdtemp(prefix="sluice-ledger-")
    sluice = conftest.Broker(data).start()
    return kafka, sluice


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    subprocess.run([str(KAFKA_SH), "classpath"], check=True, capture_output=True)
    kafka, sluice = start_both()
    try:
        apis = api_section(api_versions(kafka.bootstrap), api_versions(sluice.bootstrap))
    finally:
        kafka.stop()
        sluice.stop()
    ids = scenarios()
    if args.check:
        text = LEDGER.read_text() if LEDGER.exists() else ""
        stale = []
        if apis not in text:
            stale.append("the API versions changed")
        listed = set(re.findall(r"^\| `([^`]+)` \|", text, re.M))
        wanted = {i.removeprefix("tests/clients/") for i in ids}
        if listed != wanted:
            stale.append(f"scenarios added {sorted(wanted - listed)[:5]} "
                         f"removed {sorted(listed - wanted)[:5]}")
        if stale:
            print("docs/compatibility.md is not current: " + "; ".join(stale)
                  + ". Run scripts/compatibility.py.", file=sys.stderr)
            return 1
        print("docs/compatibility.md is current")
        return 0
    notes = json.loads(NOTES.read_text()) if NOTES.exists() else {}
    on_kafka = run_scenarios({"SLUICE_TEST_REFERENCE": "kafka"})
    on_sluice = run_scenarios({})
    same = sum(1 for i in ids if on_kafka.get(i) == on_sluice.get(i))
    LEDGER.write_text(
        HEADER
        + "\n## APIs and versions\n\n" + apis + "\n"
        + f"\n## Scenarios\n\n{len(ids)} scenarios; the same outcome on both: {same}.\n\n"
        + scenario_section(ids, on_kafka, on_sluice, notes) + "\n")
    print(f"wrote {LEDGER.relative_to(ROOT)}: {len(ids)} scenarios, {same} with the same outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
