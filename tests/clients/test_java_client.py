"""The Java client suite (tests/java: JUnit 5 with org.apache.kafka:kafka-clients 4)
against this module's brokers: producer, consumer (classic with every assignor, the
consumer protocol, static members, seek, offsetsForTimes, pause/resume, listeners,
commits), the transactional producer (consume-transform-produce, fencing) and
AdminClient. Maven resolves the suite's dependencies (cached in ~/.m2)."""

import subprocess

from conftest import ROOT


def test_java_client_suite(broker):
    p = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(ROOT / "tests" / "java" / "pom.xml"), "test",
         f"-Dbootstrap={broker.bootstrap}"],
        capture_output=True, text=True, timeout=1200)
    report = "\n".join(line for line in p.stdout.splitlines()
                       if "Tests run" in line or "FAIL" in line or "ERROR]  " in line)
    assert p.returncode == 0, f"mvn test exited {p.returncode}:\n{report}\n{p.stdout[-4000:]}"
