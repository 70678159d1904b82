"""The quick start path with kcat: list, produce and consume with no setup."""

import subprocess

from conftest import unique


def kcat(broker, *args, stdin=None):
    return subprocess.run(
        ["kcat", "-b", broker.bootstrap, *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=True,
    ).stdout


def test_list_produce_consume(broker):
    brokers = len(getattr(broker, "brokers", [broker]))
    assert f"{brokers} brokers:" in kcat(broker, "-L")
    topic = unique("kcat")
    lines = "".join(f"k{i}:v{i}\n" for i in range(100))
    kcat(broker, "-P", "-t", topic, "-K:", stdin=lines)
    out = kcat(broker, "-C", "-t", topic, "-e", "-q", "-f", "%o %k %s\n")
    assert out.splitlines() == [f"{i} k{i} v{i}" for i in range(100)]
    assert f"topic \"{topic}\" with 1 partitions" in kcat(broker, "-L", "-t", topic)
