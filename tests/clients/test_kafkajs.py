"""kafkajs (npm, tests/js): admin, an idempotent producer and a two-member group against
this module's brokers. npm installs the pinned kafkajs into tests/js/node_modules."""

import os
import subprocess

from conftest import ROOT

JS = ROOT / "tests" / "js"


def test_kafkajs(broker):
    if not (JS / "node_modules" / "kafkajs").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       capture_output=True, timeout=600)
    p = subprocess.run(["node", "kafkajs.test.js"], cwd=JS, capture_output=True, text=True,
                       env={**os.environ, "BOOTSTRAP": broker.bootstrap},
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "all checks passed" in p.stdout
