//! `sluice topic|group|cluster …`: the operator's CLI, a client of any broker's
//! admin API (`/admin/v1`, see `admin.rs`). Tables by default, the API's JSON with
//! `--json`. Reassignment waits and prints progress until every moved partition is
//! led by its new broker.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::de::DeserializeOwned;

use crate::admin::{ClusterView, CreateTopic, ErrorBody, GroupLag, Reassign, TopicView};
use crate::config::AdminArgs;

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Topics with their partition counts, sizes and pins.
    List,
    /// One topic: each partition's leader, offsets, size and where its data is.
    Describe { name: String },
    /// Create a topic.
    Create {
        name: String,
        /// Partition count (default: the brokers' --default-partitions).
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// A topic config, e.g. --config retention.ms=86400000 (repeatable).
        #[arg(long = "config", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// Delete a topic and, in the background, its data.
    Delete { name: String },
    /// Move partitions' leadership to a broker and keep it there (a pin), or
    /// release pins with --unpin. No data is copied; waits until the move is done.
    Reassign {
        name: String,
        /// Partitions to move, e.g. 0,3,4 (default: all).
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<i32>>,
        /// The broker to lead them.
        #[arg(long, required_unless_present = "unpin", conflicts_with = "unpin")]
        broker: Option<i32>,
        /// Release the pins; the controller balances the partitions again.
        #[arg(long)]
        unpin: bool,
        /// Give up waiting for the move after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Groups with their protocol, state, member count and total lag.
    List,
    /// One group: members and their assignments, and lag per partition.
    Describe { group: String },
    /// Lag per partition of one group, or of every group.
    Lag { group: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, their addresses, roles and partitions led, and the controller.
    Describe,
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

struct Api {
    base: String,
    client: reqwest::Client,
    json: bool,
}

impl Api {
    fn new(admin: &AdminArgs) -> Self {
        Self {
            base: admin.admin_url.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            json: admin.json,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(T, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(method, &url)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req.send().await.with_context(|| url.clone())?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| url.clone())?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            bail!("{status}: {message}");
        }
        let value = serde_json::from_str(&text).with_context(|| format!("{url}: bad answer"))?;
        Ok((value, text))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<(T, String)> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Prints the JSON with `--json`, else runs `table`.
    fn show<T>(&self, (value, raw): (T, String), table: impl FnOnce(&T)) {
        if self.json {
            println!("{raw}");
        } else {
            table(&value);
        }
    }
}

pub async fn topic(admin: AdminArgs, command: TopicCommand) -> anyhow::Result<()> {
    let api = Api::new(&admin);
    match command {
        TopicCommand::List => {
            let answer = api.get::<Vec<TopicView>>("/admin/v1/topics").await?;
            api.show(answer, |topics| print_topics(topics));
        }
        TopicCommand::Describe { name } => {
            let answer = api
                .get::<TopicView>(&format!("/admin/v1/topics/{}", encode(&name)))
                .await?;
            api.show(answer, print_topic);
        }
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => {
            let body = serde_json::to_vec(&CreateTopic {
                name,
                partitions,
                configs: configs.into_iter().collect(),
            })?;
            let answer = api
                .call::<TopicView>(reqwest::Method::POST, "/admin/v1/topics", Some(body))
                .await?;
            api.show(answer, |t| {
                println!("created {} ({} partitions)", t.name, t.partitions.len())
            });
        }
        TopicCommand::Delete { name } => {
            let answer = api
                .call::<serde_json::Value>(
                    reqwest::Method::DELETE,
                    &format!("/admin/v1/topics/{}", encode(&name)),
                    None,
                )
                .await?;
            api.show(answer, |_| println!("deleted {name}"));
        }
        TopicCommand::Reassign {
            name,
            partitions,
            broker,
            unpin,
            timeout_secs,
        } => {
            let broker = if unpin { None } else { broker };
            reassign(&api, &name, partitions, broker, timeout_secs).await?;
        }
    }
    Ok(())
}

async fn reassign(
    api: &Api,
    name: &str,
    partitions: Option<Vec<i32>>,
    broker: Option<i32>,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let path = format!("/admin/v1/topics/{}", encode(name));
    let body = serde_json::to_vec(&Reassign {
        partitions: partitions.clone(),
        broker,
    })?;
    let (topic, _) = api
        .call::<TopicView>(
            reqwest::Method::POST,
            &format!("{path}/reassign"),
            Some(body),
        )
        .await?;
    let moved: Vec<i32> =
        partitions.unwrap_or_else(|| topic.partitions.iter().map(|p| p.partition).collect());
    let Some(target) = broker else {
        println!(
            "unpinned {} partition(s) of {name}; the controller balances them again",
            moved.len()
        );
        return Ok(());
    };
    let started = Instant::now();
    let mut last = usize::MAX;
    loop {
        let (topic, _) = api.get::<TopicView>(&path).await?;
        let done = topic
            .partitions
            .iter()
            .filter(|p| moved.contains(&p.partition) && p.leader == Some(target))
            .count();
        if done != last {
            println!(
                "{name}: {done}/{} partition(s) led by broker {target} ({:.1}s)",
                moved.len(),
                started.elapsed().as_secs_f64()
            );
            last = done;
        }
        if done == moved.len() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(timeout_secs) {
            bail!(
                "gave up after {timeout_secs}s with {done}/{} moved; the pins stay",
                moved.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn group(admin: AdminArgs, command: GroupCommand) -> anyhow::Result<()> {
    let api = Api::new(&admin);
    match command {
        GroupCommand::List => {
            let answer = api.get::<Vec<GroupLag>>("/admin/v1/groups").await?;
            api.show(answer, |groups| {
                let rows = groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.group.clone(),
                            g.protocol.clone().unwrap_or_else(|| "-".into()),
                            g.state.clone(),
                            g.members.len().to_string(),
                            g.lag.to_string(),
                        ]
                    })
                    .collect();
                table(&["GROUP", "PROTOCOL", "STATE", "MEMBERS", "LAG"], rows);
            });
        }
        GroupCommand::Describe { group } => {
            let answer = api
                .get::<GroupLag>(&format!("/admin/v1/groups/{}", encode(&group)))
                .await?;
            api.show(answer, |g| {
                println!(
                    "group {} ({}, {}), coordinator shard {}, lag {}",
                    g.group,
                    g.protocol.as_deref().unwrap_or("offsets only"),
                    g.state,
                    g.shard,
                    g.lag
                );
                let rows = g
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.clone(),
                            m.client_id.clone(),
                            m.client_host.clone(),
                            m.assignment
                                .iter()
                                .map(|(t, ps)| format!("{t}:{ps:?}"))
                                .collect::<Vec<_>>()
                                .join(" "),
                        ]
                    })
                    .collect();
                table(&["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"], rows);
                println!();
                print_lag(std::slice::from_ref(g));
            });
        }
        GroupCommand::Lag { group } => {
            let groups = match &group {
                Some(id) => vec![
                    api.get::<GroupLag>(&format!("/admin/v1/groups/{}", encode(id)))
                        .await?
                        .0,
                ],
                None => api.get::<Vec<GroupLag>>("/admin/v1/groups").await?.0,
            };
            if api.json {
                println!("{}", serde_json::to_string(&groups)?);
            } else {
                print_lag(&groups);
            }
        }
    }
    Ok(())
}

pub async fn cluster(admin: AdminArgs, command: ClusterCommand) -> anyhow::Result<()> {
    let api = Api::new(&admin);
    match command {
        ClusterCommand::Describe => {
            let answer = api.get::<ClusterView>("/admin/v1/cluster").await?;
            api.show(answer, |c| {
                println!(
                    "cluster {}, controller {}",
                    c.cluster_id,
                    c.controller.map_or("none".into(), |b| b.to_string())
                );
                let rows = c
                    .brokers
                    .iter()
                    .map(|b| {
                        let r = &b.record;
                        let roles = [("broker", r.roles.broker), ("compactor", r.roles.compactor)]
                            .iter()
                            .filter(|(_, on)| *on)
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(",");
                        vec![
                            r.id.to_string(),
                            format!("{}:{}", r.host, r.port),
                            r.http.clone().unwrap_or_else(|| "-".into()),
                            r.rack.clone().unwrap_or_else(|| "-".into()),
                            roles,
                            if r.leaving { "leaving" } else { "live" }.into(),
                            b.partitions_led.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "KAFKA", "HTTP", "RACK", "ROLES", "STATE", "LEADS"],
                    rows,
                );
            });
        }
    }
    Ok(())
}

fn print_topics(topics: &[TopicView]) {
    let rows = topics
        .iter()
        .map(|t| {
            let known: Vec<_> = t.partitions.iter().filter_map(|p| p.size_bytes).collect();
            let records: i64 = t
                .partitions
                .iter()
                .filter_map(|p| Some(p.high_watermark? - p.log_start_offset?))
                .sum();
            vec![
                t.name.clone(),
                t.partitions.len().to_string(),
                records.to_string(),
                bytes(known.iter().sum()),
                t.pinned.len().to_string(),
            ]
        })
        .collect();
    table(&["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "PINNED"], rows);
}

fn print_topic(t: &TopicView) {
    println!("topic {} (id {})", t.name, t.id);
    for (k, v) in &t.configs {
        println!("  {k}={v}");
    }
    let opt = |v: Option<i64>| v.map_or("?".into(), |v| v.to_string());
    let rows = t
        .partitions
        .iter()
        .map(|p| {
            let leader = p.leader.map_or("none".into(), |l| l.to_string());
            vec![
                p.partition.to_string(),
                match t.pinned.get(&p.partition) {
                    Some(b) => format!("{leader} (pinned to {b})"),
                    None => leader,
                },
                opt(p.leader_epoch.map(i64::from)),
                opt(p.log_start_offset),
                opt(p.high_watermark),
                p.size_bytes.map_or("?".into(), bytes),
                format!(
                    "{}/{}/{}",
                    opt(p.wal_entries.map(|n| n as i64)),
                    opt(p.segments.map(|n| n as i64)),
                    opt(p.lake_files.map(|n| n as i64))
                ),
            ]
        })
        .collect();
    table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "LOG START",
            "HIGH WATERMARK",
            "SIZE",
            "WAL/SEGMENTS/LAKE",
        ],
        rows,
    );
}

fn print_lag(groups: &[GroupLag]) {
    let opt = |v: Option<i64>| v.map_or("?".into(), |v| v.to_string());
    let rows = groups
        .iter()
        .flat_map(|g| {
            g.offsets.iter().map(|o| {
                vec![
                    g.group.clone(),
                    o.topic.clone(),
                    o.partition.to_string(),
                    o.committed.to_string(),
                    opt(o.high_watermark),
                    opt(o.lag),
                ]
            })
        })
        .collect();
    table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "HIGH WATERMARK",
            "LAG",
        ],
        rows,
    );
}

/// Prints rows under headers in aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Percent-encodes a URL path segment: group ids may hold any character.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
