//! What the tests of every crate share. Real services, started on loopback and
//! stopped on drop: etcd (Debian's `etcd-server`) and an S3 server (moto, PyPI
//! `moto[server]`); tests that need them start them here, and nothing is skipped when
//! a component is missing: starting fails. [`batches`]: record batches as producers
//! send them. [`engine`]: an engine leading a topic, on in-memory stores.
//!
//! (A crate's own unit tests cannot use [`engine`]: the test build of a crate is not
//! the crate this kit depends on. `sluice-broker`'s `testing.rs` is its unit tests'
//! harness for that reason.)

pub mod batches;
pub mod engine;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A single-member etcd on loopback with its own data directory.
pub struct Etcd {
    child: Option<Child>,
    client_url: String,
    peer_url: String,
    dir: tempfile::TempDir,
    tls: bool,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Result<Self> {
        let mut etcd = Self::unstarted(false)?;
        etcd.launch()?;
        Ok(etcd)
    }

    /// Free ports and a fresh data directory; clients speak TLS when `tls`.
    fn unstarted(tls: bool) -> Result<Self> {
        let scheme = if tls { "https" } else { "http" };
        Ok(Self {
            child: None,
            client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            dir: tempfile::tempdir()?,
            tls,
        })
    }

    /// Starts etcd serving clients over TLS and requiring a client certificate; the
    /// CA, server and client certificates are made here with `openssl`. See
    /// [`Etcd::tls_file`] for the PEM files a client needs.
    pub fn start_tls() -> Result<Self> {
        let mut etcd = Self::unstarted(true)?;
        etcd.make_certificates()?;
        etcd.launch()?;
        Ok(etcd)
    }

    /// A PEM file of the TLS setup: `ca.pem`, `client.pem`, `client.key`.
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("tls").join(name)
    }

    fn make_certificates(&self) -> Result<()> {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )?;
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        let steps: [&[&str]; 5] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sluice-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=sluice",
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "client.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "client.ext",
                "-out",
                "client.pem",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .context("running openssl")?;
            if !out.status.success() {
                bail!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new("etcd");
        if self.tls {
            cmd.arg("--cert-file")
                .arg(self.tls_file("server.pem"))
                .arg("--key-file")
                .arg(self.tls_file("server.key"))
                .arg("--trusted-ca-file")
                .arg(self.tls_file("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &format!("test={}", self.peer_url)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (Debian package etcd-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy() {
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "etcd did not become healthy at {} within 30s",
                    self.client_url
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Kills etcd (SIGKILL); its data stays for [`Etcd::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports.
    pub fn start_again(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    fn healthy(&self) -> bool {
        let port = self.client_url.rsplit(':').next().unwrap_or_default();
        if self.tls {
            // Plain HTTP cannot ask; a listening port is enough (clients retry).
            return TcpStream::connect(format!("127.0.0.1:{port}")).is_ok();
        }
        http("127.0.0.1", port, "GET", "/health").is_ok_and(|r| r.contains("\"health\":\"true\""))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.1 request; returns status line, headers and body.
pub fn http(host: &str, port: &str, method: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(format!("{host}:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Credentials every test process uses against the local S3 server; nothing may
/// reach the EC2 metadata service.
pub const AWS_TEST_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "sluice-test"),
    ("AWS_SECRET_ACCESS_KEY", "sluice-test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A local S3-compatible server (moto) with one bucket, stopped on drop.
pub struct S3Server {
    pub port: u16,
    pub bucket: String,
    child: Child,
}

impl S3Server {
    pub fn start() -> Result<Self> {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server (pip install 'moto[server]')")?;
        let mut s = Self {
            port,
            bucket: "sluice".into(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = s.request("PUT", &format!("/{}", s.bucket)) {
                if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
                    return Ok(s);
                }
            }
            if Instant::now() > deadline {
                let _ = s.child.kill();
                bail!("moto_server did not answer on port {port} within 30s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A raw unsigned request (moto accepts them); returns the status line and body.
    pub fn request(&self, method: &str, path: &str) -> Result<String> {
        http("127.0.0.1", &self.port.to_string(), method, path)
    }

    /// Keys under `prefix` in the bucket.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let body = self.request(
            "GET",
            &format!("/{}?list-type=2&prefix={prefix}", self.bucket),
        )?;
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
