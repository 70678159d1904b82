"""Go clients against this module's brokers (tests/go, modules from the Go module
proxy): a small IBM/sarama test (admin, idempotent producer, a two-member consumer
group), and franz-go's own kgo integration suite, run as its helpers expect (seed
brokers in KGO_SEEDS) and counted: every test it fails must be in
tests/go/franz-go-expected-failures.json with the reason, and so is every test not
run."""

import json
import os
import subprocess
from collections import Counter

from conftest import ROOT

GO_DIR = ROOT / "tests" / "go"
KGO = "github.com/twmb/franz-go/pkg/kgo"


def go_test(args, env, timeout):
    return subprocess.run(["go", "test", "-count=1", *args], cwd=GO_DIR, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env})


def test_sarama(broker):
    p = go_test(["-run", "TestSarama", "-v", "."], {"SLUICE_BOOTSTRAP": broker.bootstrap}, 600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


def test_franz_go_kgo_suite(broker):
    expected = json.loads((GO_DIR / "franz-go-expected-failures.json").read_text())
    env = {
        "KGO_SEEDS": broker.bootstrap,
        # A Sluice partition has one replica; the records per ETL test are lowered to
        # keep the run within the test command's budget.
        "KGO_TEST_RF": "1",
        "KGO_TEST_RECORDS": os.environ.get("KGO_TEST_RECORDS", "50000"),
    }
    skip = "^(" + "|".join(expected["not_run"]) + ")$"
    p = go_test(["-json", "-timeout", "25m", "-skip", skip, KGO], env, 1800)
    outcome, output = {}, {}
    for line in p.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        name = event.get("Test")
        if not name:
            continue
        top = name.split("/")[0]
        output.setdefault(top, []).append(event.get("Output", ""))
        if name == top and event.get("Action") in ("pass", "fail", "skip"):
            outcome[name] = event["Action"]
    counts = Counter(outcome.values())
    failed = sorted(t for t, a in outcome.items() if a == "fail")
    unexpected = [t for t in failed if t not in expected["fail"]]
    now_passing = sorted(t for t in expected["fail"] if outcome.get(t) == "pass")
    print(f"franz-go kgo suite: {counts['pass']} passed, {counts['fail']} failed, "
          f"{counts['skip']} skipped by the suite itself, of {len(outcome)} tests run; "
          f"not run: {', '.join(expected['not_run'])}")
    if now_passing:
        print("expected to fail but passed:", ", ".join(now_passing))
    assert outcome, p.stdout[-4000:] + p.stderr[-4000:]
    assert not unexpected, (f"unexpected failures {unexpected}; "
                            f"{counts['pass']} passed, {counts['fail']} failed\n"
                            + "".join("".join(output[t])[-3000:] for t in unexpected))
