//! Progress of long loops: a bar on a terminal and, always, a log line at most every
//! [`log_interval`] (30 s; `DARTSIF_PROGRESS_SECS` changes it) with done/total, rate and ETA, so
//! that a Slurm log or `logs/rank-0.log` shows where a job is. Only the coordinator reports;
//! on other ranks a [`Progress`] counts silently.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Seconds between two log lines of one loop (`DARTSIF_PROGRESS_SECS`, default 30; 0 logs every
/// step, for tests).
pub fn log_interval() -> Duration {
    let secs = std::env::var("DARTSIF_PROGRESS_SECS").ok().and_then(|v| v.parse::<f64>().ok());
    secs.and_then(|s| Duration::try_from_secs_f64(s).ok()).unwrap_or(Duration::from_secs(30))
}

/// One loop's progress.
pub struct Progress {
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    start_done: u64,
    start: Instant,
    last_log: Instant,
    interval: Duration,
    report: bool,
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// `what` names the loop in the log ("darts-if candidates"), `unit` its items ("candidates",
    /// "batches"). `report`: this rank reports (the coordinator); a bar is drawn when stderr is
    /// a terminal and `bar` is true.
    pub fn new(what: impl Into<String>, unit: &'static str, total: u64, report: bool, bar: bool) -> Self {
        let what = what.into();
        let bar = if report && bar && total > 0 && std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}  {elapsed_precise}<{eta_precise}")
                    .expect("template"),
            );
            b.set_message(format!("{unit} ({what})"));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let now = Instant::now();
        Progress {
            what,
            unit,
            total,
            done: 0,
            start_done: 0,
            start: now,
            last_log: now,
            interval: log_interval(),
            report,
            bar,
        }
    }

    /// The same, starting at `done` items (a resumed loop): the rate counts only new items.
    pub fn resumed(mut self, done: u64) -> Self {
        self.done = done;
        self.bar.set_position(done);
        self.start_done = done;
        self
    }

    /// `n` more items are done.
    pub fn inc(&mut self, n: u64) {
        if let Some(line) = self.tick(n) {
            self.bar.suspend(|| tracing::info!("{line}"));
        }
    }

    /// `n` more items are done; returns the log line when one is due (for a caller that draws
    /// its own bar and logs it around that).
    pub fn tick(&mut self, n: u64) -> Option<String> {
        self.done += n;
        self.bar.set_position(self.done);
        if self.report && self.last_log.elapsed() >= self.interval && self.done < self.total {
            self.last_log = Instant::now();
            return Some(self.line());
        }
        None
    }

    /// "what: done/total unit (pct), rate, ETA".
    pub fn line(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let new = self.done.saturating_sub(self.start_done) as f64;
        let rate = if secs > 0.0 { new / secs } else { 0.0 };
        let left = self.total.saturating_sub(self.done) as f64;
        let eta = if rate > 0.0 { format_secs(left / rate) } else { "?".into() };
        let pct = if self.total > 0 { 100.0 * self.done as f64 / self.total as f64 } else { 100.0 };
        let rate = if rate >= 1.0 || rate == 0.0 {
            format!("{rate:.2} {}/s", self.unit)
        } else {
            format!("{:.1} s per {}", 1.0 / rate, singular(self.unit))
        };
        format!("{}: {}/{} {} ({pct:.0}%), {rate}, ETA {eta}", self.what, self.done, self.total, self.unit)
    }

    /// Clears the bar; logs the total time when the loop took longer than one interval.
    pub fn finish(self) {
        self.bar.finish_and_clear();
        let secs = self.start.elapsed();
        if self.report && secs >= self.interval && self.total > 0 {
            tracing::info!("{}: {} {} done in {}", self.what, self.done, self.unit, format_secs(secs.as_secs_f64()));
        }
    }
}

/// "batches" → "batch", "candidates" → "candidate".
fn singular(unit: &str) -> &str {
    if ["ches", "shes", "sses", "xes"].iter().any(|e| unit.ends_with(e)) {
        &unit[..unit.len() - 2]
    } else {
        unit.strip_suffix('s').unwrap_or(unit)
    }
}

/// `95 s`, `12 min 5 s`, `3 h 20 min`.
pub fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_done_total_rate_and_eta() {
        let mut p = Progress::new("darts-if candidates", "candidates", 24, false, false);
        p.start = Instant::now() - Duration::from_secs(10);
        p.inc(5);
        // 5 in 10 s: 2.0 s per candidate, 19 left → 38 s.
        assert_eq!(p.line(), "darts-if candidates: 5/24 candidates (21%), 2.0 s per candidate, ETA 38 s");
        let mut p = Progress::new("steps", "steps", 1000, false, false).resumed(400);
        p.start = Instant::now() - Duration::from_secs(100);
        p.inc(300);
        // 300 new in 100 s: 3 steps/s, 300 left → 100 s.
        assert_eq!(p.line(), "steps: 700/1000 steps (70%), 3.00 steps/s, ETA 100 s");
    }

    #[test]
    fn units_in_the_singular() {
        assert_eq!((singular("batches"), singular("candidates"), singular("units")), ("batch", "candidate", "unit"));
    }

    #[test]
    fn durations_read_as_a_person_would() {
        assert_eq!(format_secs(95.4), "95 s");
        assert_eq!(format_secs(725.0), "12 min 5 s");
        assert_eq!(format_secs(12_000.0), "3 h 20 min");
    }
}
