//! The process's own metrics, with the names every Prometheus client uses (`process_*`), read
//! from `/proc` at each scrape. `prometheus-client` has no process collector, and the crates
//! that read all of `/proc` are far larger than the five numbers needed here. Elsewhere than
//! Linux there are none.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use std::fmt;

/// Reads the process's figures at each scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// What `/proc` says of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Figures {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(figures) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(figures.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let memory = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                figures.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                figures.virtual_bytes,
            ),
        ];
        for (name, help, bytes) in memory {
            let gauge = ConstGauge::new(bytes);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Bytes),
                gauge.metric_type(),
            )?)?;
        }
        let start = ConstGauge::new(figures.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch in seconds",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)?;
        let descriptors = [
            (
                "process_open_fds",
                "Number of open file descriptors",
                figures.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit)",
                figures.max_fds,
            ),
        ];
        for (name, help, count) in descriptors {
            let Some(count) = count else { continue };
            let gauge = ConstGauge::new(count);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn read() -> Option<Figures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64);
    let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    parse(&stat, &boot, ticks, page, open_fds, max_fds)
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<Figures> {
    None
}

/// The figures from `/proc/self/stat` and `/proc/stat` (`btime`), in clock ticks and pages.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse(
    stat: &str,
    boot: &str,
    ticks_per_second: f64,
    page_size: u64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
) -> Option<Figures> {
    // `pid (comm) state ppid …`: the command may hold spaces and parentheses, so the fields
    // are counted from the last `)`; field 3 (`state`) is the first after it.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let (start_ticks, virtual_bytes, resident_pages) = (field(22)?, field(23)?, field(24)?);
    let boot_time: u64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Figures {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        resident_bytes: resident_pages * page_size,
        virtual_bytes,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / ticks_per_second,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_command() {
        // A command with a space and a parenthesis; utime 250, stime 50 ticks, started 1000
        // ticks after boot, 8 MiB virtual, 300 pages resident.
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    1000 8388608 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 7\n";
        let figures = parse(stat, boot, 100.0, 4096, Some(9), Some(1024)).unwrap();
        assert_eq!(
            figures,
            Figures {
                cpu_seconds: 3.0,
                resident_bytes: 300 * 4096,
                virtual_bytes: 8_388_608,
                start_time_seconds: 1_700_000_010.0,
                open_fds: Some(9),
                max_fds: Some(1024),
            }
        );
        assert_eq!(parse("4242 (x) S 1", boot, 100.0, 4096, None, None), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads() {
        let figures = read().expect("figures from /proc");
        assert!(figures.resident_bytes > 0);
        assert!(figures.open_fds.unwrap() >= 3);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(figures.start_time_seconds <= now + 1.0);
        assert!(figures.start_time_seconds > now - 24.0 * 3600.0);
    }
}
