//! Counters of retention, the janitor and compaction (the write path keeps its own).

/// Counters of retention, the janitor and compaction, rendered on `/metrics` (the
/// write path keeps its own, [`WriteMetrics`](crate::WriteMetrics)).
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Log start offsets moved (DeleteRecords and retention).
    pub log_start_moves: std::sync::atomic::AtomicU64,
    /// Manifests the janitor deleted (all their records below the log start).
    pub manifests_expired: std::sync::atomic::AtomicU64,
    /// Objects the janitor deleted: of expired manifests, and orphans.
    pub objects_expired: std::sync::atomic::AtomicU64,
    pub objects_orphaned: std::sync::atomic::AtomicU64,
    /// Folds committed: into segments, and into lake files.
    pub folds_segment: std::sync::atomic::AtomicU64,
    pub folds_lake: std::sync::atomic::AtomicU64,
    /// Log compaction passes (`cleanup.policy=compact`).
    pub cleanings: std::sync::atomic::AtomicU64,
    /// Manifests left after the janitor's last round (on the controller).
    pub manifests_live: std::sync::atomic::AtomicU64,
}

impl EngineMetrics {
    /// Prometheus text for these counters and the partitions this broker leads.
    pub fn render(&self, led_partitions: usize, generation: u64, out: &mut String) {
        use sluice_metrics::{counters, gauge};
        counters(
            out,
            "sluice_log_start_moves_total",
            "Log start offsets moved by DeleteRecords and retention.",
            "",
            &[("", &self.log_start_moves)],
        );
        counters(
            out,
            "sluice_janitor_deleted_total",
            "Manifests and objects the janitor deleted.",
            "kind",
            &[
                ("manifest", &self.manifests_expired),
                ("expired_object", &self.objects_expired),
                ("orphaned_object", &self.objects_orphaned),
            ],
        );
        counters(
            out,
            "sluice_folds_total",
            "Compaction folds committed, by output format.",
            "format",
            &[
                ("segment", &self.folds_segment),
                ("parquet", &self.folds_lake),
            ],
        );
        counters(
            out,
            "sluice_log_cleanings_total",
            "Log compaction passes (cleanup.policy=compact).",
            "",
            &[("", &self.cleanings)],
        );
        gauge(
            out,
            "sluice_manifests_live",
            "Manifests left after the janitor's last round (controller only).",
            self.manifests_live
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        gauge(
            out,
            "sluice_partitions_led",
            "Partitions this broker leads.",
            led_partitions,
        );
        gauge(
            out,
            "sluice_broker_generation",
            "This broker's generation (bumped when partitions are taken from it).",
            generation,
        );
    }
}
