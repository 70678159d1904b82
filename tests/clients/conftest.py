"""Starts the real `sluice` binary for the client tests.

Each test module gets a fresh broker on free loopback ports with its own data
directory. The binary is $SLUICE_BIN, else target/release/sluice, else
target/debug/sluice (the test command builds it first).

With SLUICE_TEST_OBJECT_STORE=s3 each module's broker keeps its objects in S3: the
fixture starts an S3 server (moto) for the module and stops it afterwards.

With SLUICE_TEST_CLUSTER=N each module gets N brokers instead of one, sharing an
etcd and an S3 server started for the module;
clients bootstrap from every broker's address.

With SLUICE_TEST_REFERENCE=kafka each module gets Apache Kafka instead (one KRaft
node from the Maven jars, tests/kafka/kafka.sh): the reference the compatibility
ledger compares Sluice with (scripts/compatibility.py).
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


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "sluice-test",
    "AWS_SECRET_ACCESS_KEY": "sluice-test",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class S3Server:
    """An S3 server with one bucket: moto on a free loopback port, or, when
    `endpoint` is given, an S3 server already running there (LocalStack)."""

    def __init__(self, bucket="sluice", endpoint=None):
        self.bucket = bucket
        self.proc = None
        if endpoint:
            self.port = int(endpoint.rsplit(":", 1)[1])
        else:
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        deadline = time.time() + 30
        while True:
            try:
                req = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError("moto_server did not start in 30s")
                time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keys(self, prefix: str) -> list:
        url = f"{self.endpoint}/{self.bucket}?list-type=2&prefix={prefix}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
        return [k.split("</Key>")[0] for k in body.split("<Key>")[1:]]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class PortTaken(RuntimeError):
    """The broker could not bind a port picked as free."""


class Broker:
    def __init__(self, data_dir: str, extra_args=()):
        self.data_dir = data_dir
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.started = False
        self.log = open(os.path.join(data_dir, "broker.log"), "ab")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metric(self, name: str, label: str = "") -> float:
        """Sum of the series `name` in /metrics whose labels contain `label`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            body = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if (line.startswith(name + "{") or line.startswith(name + " "))
                   and label in line)

    def start(self):
        # A free port can be taken by someone else before the broker binds it (the
        # kernel hands the same range out for outgoing connections): on a first start
        # that loses this race, try other ports.
        for attempt in range(3):
            try:
                return self._start()
            except PortTaken:
                if self.started or attempt == 2:
                    raise
                self.port, self.http_port = free_port(), free_port()

    def _start(self):
        args = [
            sluice_bin(), "serve",
            "--data-dir", self.data_dir,
            # New groups start without Kafka's 3 s wait for more members.
            "--group-initial-rebalance-delay-ms=300",
            # KIP-848 members heartbeat every 500 ms (Kafka: 5 s) so rebalances in the
            # tests take a fraction of a second; a dead member is noticed after 6 s.
            "--group-consumer-heartbeat-interval-ms=500",
            "--group-consumer-session-timeout-ms=6000",
            # Retention and the janitor run every 500 ms (Kafka: 5 min).
            "--log-retention-check-interval-ms=500",
            # Compaction looks for runs to fold every 300 ms (default 60 s): slices
            # become segments (and lake files) within seconds.
            "--compaction-interval-ms=300",
            "--kafka-listen", self.bootstrap,
            "--http-listen", f"127.0.0.1:{self.http_port}",
            *self.extra_args,
        ]
        env = {**os.environ, **AWS_TEST_ENV}
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = open(self.log.name, errors="replace").read()[-2000:]
                if "Address already in use" in tail:
                    raise PortTaken(tail)
                raise RuntimeError(f"sluice exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        self.started = True
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


class Etcd:
    """A single-member etcd on free loopback ports with its own data directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-etcd-")
        client, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "test", "--data-dir", self.dir,
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"test={peer_url}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if b'"health":"true"' in r.read():
                        return
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("etcd did not become healthy in 30s")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """N brokers (ids 1..N) on one etcd and one S3 server; `bootstrap` names them all."""

    def __init__(self, n: int):
        self.etcd = Etcd()
        self.s3 = S3Server()
        self.dirs = [tempfile.mkdtemp(prefix="sluice-test-") for _ in range(n)]
        self.brokers = [
            Broker(d, [f"--etcd={self.etcd.url}", f"--broker-id={i + 1}",
                       f"--object-store=s3://{self.s3.bucket}/cluster",
                       f"--s3-endpoint={self.s3.endpoint}"])
            for i, d in enumerate(self.dirs)
        ]
        for b in self.brokers:
            b.start()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def stop(self):
        for b in self.brokers:
            b.stop()
        self.s3.stop()
        self.etcd.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


class ApacheKafka:
    """Apache Kafka 4 (tests/kafka/kafka.sh), one node, data in a temporary directory."""

    def __init__(self):
        # Ports picked as free can be taken before Kafka binds them: try others.
        for attempt in range(3):
            self.dir = tempfile.mkdtemp(prefix="kafka-test-")
            self.port = free_port()
            start = subprocess.run(
                [str(ROOT / "tests" / "kafka" / "kafka.sh"), "start", self.dir,
                 str(self.port), str(free_port())],
                capture_output=True, text=True, timeout=900)
            if start.returncode == 0:
                return
            self.stop()
            if "Address already in use" not in start.stderr or attempt == 2:
                raise RuntimeError(f"Apache Kafka did not start:\n{start.stderr[-3000:]}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self):
        subprocess.run([str(ROOT / "tests" / "kafka" / "kafka.sh"), "stop", self.dir],
                       check=False, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def object_store_args(s3):
    if s3 is None:
        return []
    return [f"--object-store=s3://{s3.bucket}/broker", f"--s3-endpoint={s3.endpoint}"]


@pytest.fixture(scope="module")
def s3():
    mode = os.environ.get("SLUICE_TEST_OBJECT_STORE", "file")
    if mode not in ("file", "s3"):
        raise RuntimeError(f"SLUICE_TEST_OBJECT_STORE={mode}: expected s3 or file")
    # SLUICE_TEST_S3_ENDPOINT points at a running S3 server (e.g. LocalStack); each
    # module then gets its own bucket there. Otherwise each module starts moto.
    external = os.environ.get("SLUICE_TEST_S3_ENDPOINT")
    if mode != "s3":
        server = None
    elif external:
        server = S3Server(bucket=unique("sluice").lower(), endpoint=external)
    else:
        server = S3Server()
    yield server
    if server:
        server.stop()


@pytest.fixture(scope="module")
def broker(s3):
    if os.environ.get("SLUICE_TEST_REFERENCE") == "kafka":
        kafka = ApacheKafka()
        yield kafka
        kafka.stop()
        return
    n = int(os.environ.get("SLUICE_TEST_CLUSTER", "0"))
    if n > 0:
        cluster = Cluster(n)
        yield cluster
        cluster.stop()
        return
    data_dir = tempfile.mkdtemp(prefix="sluice-test-")
    b = Broker(data_dir, object_store_args(s3)).start()
    yield b
    b.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def unique(name: str) -> str:
    return f"{name}-{time.time_ns()}"
