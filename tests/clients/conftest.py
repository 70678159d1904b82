"""Starts the real `sluice` binary for the client tests.

Each test module gets a fresh broker on free loopback ports with its own data
directory. The binary is $SLUICE_BIN, else target/release/sluice, else
target/debug/sluice (the test command builds it first).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sluice_bin() -> str:
    env = os.environ.get("SLUICE_BIN")
    if env:
        return env
    for profile in ("release", "debug"):
        for target in (os.environ.get("CARGO_TARGET_DIR"), ROOT / "target"):
            if target and (Path(target) / profile / "sluice").exists():
                return str(Path(target) / profile / "sluice")
    raise RuntimeError("sluice binary not found: build it or set SLUICE_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir: str, extra_args=()):
        self.data_dir = data_dir
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.log = open(os.path.join(data_dir, "broker.log"), "ab")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        args = [
            sluice_bin(), "serve",
            "--data-dir", self.data_dir,
            "--kafka-listen", self.bootstrap,
            "--http-listen", f"127.0.0.1:{self.http_port}",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sluice did not become ready in 30s")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        return self.start()


@pytest.fixture(scope="module")
def broker():
    data_dir = tempfile.mkdtemp(prefix="sluice-test-")
    b = Broker(data_dir).start()
    yield b
    b.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def unique(name: str) -> str:
    return f"{name}-{time.time_ns()}"
