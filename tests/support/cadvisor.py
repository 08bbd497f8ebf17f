"""The cAdvisor metric families kubelet's CRI stats path needs of a runtime."""

from __future__ import annotations

REQUIRED = {
    "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total", "container_cpu_system_seconds_total",
    "container_cpu_usage_seconds_total", "container_cpu_user_seconds_total",
    "container_file_descriptors", "container_fs_limit_bytes", "container_fs_reads_bytes_total",
    "container_fs_reads_total", "container_fs_usage_bytes", "container_fs_writes_bytes_total",
    "container_fs_writes_total", "container_last_seen", "container_memory_cache",
    "container_memory_failures_total", "container_memory_mapped_file",
    "container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap",
    "container_memory_usage_bytes", "container_memory_working_set_bytes",
    "container_oom_events_total", "container_processes", "container_sockets",
    "container_spec_cpu_period", "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes", "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds", "container_threads", "container_threads_max",
}  # fmt: skip
NETWORK = {
    f"container_network_{d}_{what}_total"
    for d in ("receive", "transmit")
    for what in ("bytes", "packets", "packets_dropped", "errors")
}
