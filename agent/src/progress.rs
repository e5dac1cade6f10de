//! The progress of the running pipelines, for a first sync one can watch.
//!
//! `run --once` on a terminal redraws one line per pipeline in place on
//! stderr (pages fetched, records read, documents the output accepted, the
//! rate); elsewhere the same figures are logged as structured lines: every
//! few seconds for `run --once`, every `logging.metrics.period` for `run`
//! (Beats' periodic metrics log). A final line per pipeline closes the run.
//!
//! No time estimate is shown: it needs the number of records a sync will
//! read, and the inputs do not learn that total from the APIs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::LogMetricsSettings;
use crate::running::Status;

/// How often the terminal lines are redrawn.
const TERMINAL_REFRESH: Duration = Duration::from_millis(200);
/// How often the counters are read between two log lines: a pipeline's
/// start is seen within this, so its final average rate is right.
const LOG_SAMPLING: Duration = Duration::from_secs(1);
/// How far back the rate on the terminal looks: long enough to smooth the
/// page-by-page bursts, short enough to follow a slowdown.
const TERMINAL_RATE_WINDOW: Duration = Duration::from_secs(5);
/// The longest wait between progress lines of `run --once` without a terminal.
const ONCE_LOG_PERIOD: Duration = Duration::from_secs(5);
/// The shortest period honoured, so that `period: 0` cannot spin.
const MIN_PERIOD: Duration = Duration::from_secs(1);

/// The input metric counting pages (successful responses), by pipeline.
const PAGES_METRIC: &str = "threatbeat_input_pages_total";
/// The input metric counting records published by the input, by pipeline.
const RECORDS_METRIC: &str = "threatbeat_input_events_total";

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Redrawn in place on stderr, which is a terminal nothing else writes to.
    Terminal,
    /// Logged every `period`, for pipelines that moved since the last line.
    Log {
        /// Time between two lines.
        period: Duration,
    },
    /// Not shown (`logging.metrics.enabled: false`, no terminal to draw on).
    Off,
}

impl Display {
    /// The display for a run: in place only for `run --once` on a terminal
    /// that the log does not also write to (log lines would tear the
    /// redrawn block); otherwise logged, as `logging.metrics` says.
    pub fn choose(
        once: bool,
        metrics: &LogMetricsSettings,
        stderr_is_terminal: bool,
        logs_on_stderr: bool,
    ) -> Self {
        if once && stderr_is_terminal && !logs_on_stderr {
            return Display::Terminal;
        }
        if !metrics.enabled {
            return Display::Off;
        }
        let period = match once {
            true => metrics.period.0.min(ONCE_LOG_PERIOD),
            false => metrics.period.0,
        };
        Display::Log {
            period: period.max(MIN_PERIOD),
        }
    }
}

/// A running progress display; [`Reporter::finish`] writes the final lines.
pub struct Reporter {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing the progress of the pipelines in `status` (must be
    /// called on a Tokio runtime).
    pub fn start(display: Display, status: Arc<Status>) -> Self {
        let stop = CancellationToken::new();
        let task = match display {
            Display::Off => None,
            Display::Terminal => Some(tokio::spawn(report(
                status,
                Sink::Terminal(Screen::default()),
                TERMINAL_REFRESH,
                TERMINAL_RATE_WINDOW,
                stop.clone(),
            ))),
            Display::Log { period } => Some(tokio::spawn(report(
                status,
                Sink::Log,
                LOG_SAMPLING.min(period),
                period,
                stop.clone(),
            ))),
        };
        Self { stop, task }
    }

    /// Shows the final state of every pipeline and stops.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // A panic in the display must not fail the run; it was reported by the runtime.
            let _ = task.await;
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Where the lines go.
enum Sink {
    Terminal(Screen),
    Log,
}

/// Reads the counters every `every`; the terminal is redrawn each time, the
/// log gets a line per moving pipeline every `period` (also the rate's window).
async fn report(
    status: Arc<Status>,
    mut sink: Sink,
    every: Duration,
    period: Duration,
    stop: CancellationToken,
) {
    let mut tracker = Tracker::new(period);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_logged = Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => break,
        }
        let now = Instant::now();
        let lines = tracker.observe(sample(&status), now);
        match &mut sink {
            Sink::Terminal(screen) => screen.draw(&terminal_lines(&lines)),
            Sink::Log if now.duration_since(last_logged) >= period => {
                last_logged = now;
                for progress in lines.iter().filter(|progress| progress.moved) {
                    progress.log();
                }
                tracker.shown(&lines);
            }
            Sink::Log => {}
        }
    }
    let last = tracker.finish(sample(&status), Instant::now());
    match &mut sink {
        Sink::Terminal(screen) => {
            screen.draw(&terminal_lines(&last));
            screen.close();
        }
        Sink::Log => last.iter().for_each(Progress::log),
    }
}

fn terminal_lines(lines: &[Progress]) -> Vec<String> {
    lines.iter().map(Progress::terminal_line).collect()
}

/// One pipeline's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    pages: u64,
    records: u64,
    published: u64,
    dropped: u64,
}

/// What one line shows.
#[derive(Debug, Clone, PartialEq)]
struct Progress {
    pipeline: String,
    counters: Counters,
    /// Documents accepted per second.
    rate: f64,
    /// The counters changed since the line last shown.
    moved: bool,
    /// The run is over; `elapsed` is the pipeline's whole run.
    done: Option<Duration>,
}

impl Progress {
    fn terminal_line(&self) -> String {
        let Counters {
            pages,
            records,
            published,
            dropped,
        } = self.counters;
        let mut line = format!(
            "{}: {pages} pages, {records} records, {published} published",
            self.pipeline
        );
        if dropped > 0 {
            let _ = write!(line, ", {dropped} dropped");
        }
        let _ = write!(line, ", {:.0}/s", self.rate);
        if let Some(elapsed) = self.done {
            let _ = write!(line, " (done in {:.1}s)", elapsed.as_secs_f64());
        }
        line
    }

    /// One structured log line; `rate` is documents per second.
    fn log(&self) {
        let Counters {
            pages,
            records,
            published,
            dropped,
        } = self.counters;
        let rate = self.rate.round() as u64;
        match self.done {
            None => {
                tracing::info!(pipeline = %self.pipeline, pages, records, published, dropped, rate, "progress")
            }
            Some(elapsed) => tracing::info!(
                pipeline = %self.pipeline, pages, records, published, dropped, rate,
                elapsed = ?Duration::from_millis(elapsed.as_millis() as u64), "progress at the end"
            ),
        }
    }
}

/// Per-pipeline history: when it was first seen, recent samples for the rate,
/// what the previous line showed.
struct Track {
    first_seen: Instant,
    samples: VecDeque<(Instant, u64)>,
    shown: Option<Counters>,
}

struct Tracker {
    window: Duration,
    tracks: BTreeMap<String, Track>,
    /// When the counters were read before (a pipeline seen now for the first time started since).
    observed: Option<Instant>,
}

impl Tracker {
    fn new(window: Duration) -> Self {
        Self {
            window,
            tracks: BTreeMap::new(),
            observed: None,
        }
    }

    /// The current line of every pipeline in `current`, its rate over the window.
    fn observe(&mut self, current: BTreeMap<String, Counters>, now: Instant) -> Vec<Progress> {
        self.tracks.retain(|id, _| current.contains_key(id));
        let window = self.window;
        // Every start counts from 0 (its counters are new): a pipeline seen
        // for the first time was at 0 when the counters were read before.
        let started = self.observed.replace(now).unwrap_or(now);
        current
            .into_iter()
            .map(|(pipeline, counters)| {
                let track = self.tracks.entry(pipeline.clone()).or_insert_with(|| Track {
                    first_seen: started,
                    samples: VecDeque::from([(started, 0)]),
                    shown: None,
                });
                track.samples.push_back((now, counters.published));
                // Keep one sample at or before the window's start, so the rate spans all of it.
                while track
                    .samples
                    .get(1)
                    .is_some_and(|(at, _)| now.duration_since(*at) >= window)
                {
                    track.samples.pop_front();
                }
                let rate = match track.samples.front() {
                    Some((at, published)) if now > *at => {
                        counters.published.saturating_sub(*published) as f64
                            / now.duration_since(*at).as_secs_f64()
                    }
                    _ => 0.0,
                };
                let moved = track.shown != Some(counters);
                Progress {
                    pipeline,
                    counters,
                    rate,
                    moved,
                    done: None,
                }
            })
            .collect()
    }

    /// Remembers `lines` as shown: a pipeline is `moved` again once its counters change.
    fn shown(&mut self, lines: &[Progress]) {
        for line in lines {
            if let Some(track) = self.tracks.get_mut(&line.pipeline) {
                track.shown = Some(line.counters);
            }
        }
    }

    /// The final line of every pipeline, its rate averaged over its whole run.
    fn finish(&mut self, current: BTreeMap<String, Counters>, now: Instant) -> Vec<Progress> {
        let mut lines = self.observe(current, now);
        for line in &mut lines {
            if let Some(track) = self.tracks.get(&line.pipeline) {
                let elapsed = now.duration_since(track.first_seen);
                line.rate = match elapsed.as_secs_f64() {
                    seconds if seconds > 0.0 => line.counters.published as f64 / seconds,
                    _ => 0.0,
                };
                line.done = Some(elapsed);
            }
        }
        lines
    }
}

/// The counters of every pipeline in `status`, by id.
fn sample(status: &Status) -> BTreeMap<String, Counters> {
    let mut pages = input_counter(PAGES_METRIC);
    let mut records = input_counter(RECORDS_METRIC);
    status
        .pipelines()
        .into_iter()
        .map(|(id, telemetry)| {
            let counts = telemetry.counts();
            let counters = Counters {
                pages: pages.remove(&id).unwrap_or(0),
                records: records.remove(&id).unwrap_or(0),
                published: counts.published,
                dropped: counts.dropped,
            };
            (id, counters)
        })
        .collect()
}

/// A counter of the inputs (`inputs/src/metrics.rs`, default registry), by pipeline.
fn input_counter(name: &str) -> HashMap<String, u64> {
    let mut counters = HashMap::new();
    for family in prometheus::default_registry().gather() {
        if family.name() != name {
            continue;
        }
        for metric in family.get_metric() {
            let pipeline = metric.get_label().iter().find(|label| label.name() == "pipeline");
            if let Some(pipeline) = pipeline {
                counters.insert(
                    pipeline.value().to_owned(),
                    metric.get_counter().get_value() as u64,
                );
            }
        }
    }
    counters
}

/// The block of lines drawn on stderr, redrawn in place.
#[derive(Default)]
struct Screen {
    /// How many lines the block has on the terminal now.
    drawn: usize,
}

impl Screen {
    /// Replaces the block with `lines`.
    fn draw(&mut self, lines: &[String]) {
        let text = self.redraw(lines);
        let mut stderr = std::io::stderr().lock();
        // Nothing to do about a terminal that cannot be written; the run goes on.
        let _ = stderr.write_all(text.as_bytes()).and_then(|()| stderr.flush());
    }

    /// The escape sequences that replace the block with `lines`: back to
    /// the block's first line, each line erased and written, what is left of
    /// a longer previous block erased. Wrapping is off while drawing, so a
    /// line wider than the terminal is cut instead of taking two rows.
    fn redraw(&mut self, lines: &[String]) -> String {
        let mut text = String::from("\x1b[?7l");
        if self.drawn > 1 {
            let _ = write!(text, "\x1b[{}A", self.drawn - 1);
        }
        text.push('\r');
        for (index, line) in lines.iter().enumerate() {
            if index > 0 {
                text.push('\n');
            }
            text.push_str("\x1b[2K");
            text.push_str(line);
        }
        text.push_str("\x1b[J\x1b[?7h");
        self.drawn = lines.len();
        text
    }

    /// Leaves the last block on the terminal, the cursor below it.
    fn close(&mut self) {
        if self.drawn > 0 {
            let _ = std::io::stderr().write_all(b"\n");
            self.drawn = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DurationSetting;

    fn metrics(enabled: bool, seconds: u64) -> LogMetricsSettings {
        LogMetricsSettings {
            enabled,
            period: DurationSetting(Duration::from_secs(seconds)),
        }
    }

    #[test]
    fn the_terminal_is_drawn_on_only_for_run_once_without_logs_on_it() {
        let on = metrics(true, 30);
        assert_eq!(Display::choose(true, &on, true, false), Display::Terminal);
        // Disabling the metrics log does not hide the drawn lines.
        assert_eq!(
            Display::choose(true, &metrics(false, 30), true, false),
            Display::Terminal
        );
        let every_five = Display::Log {
            period: ONCE_LOG_PERIOD,
        };
        assert_eq!(Display::choose(true, &on, true, true), every_five);
        assert_eq!(Display::choose(true, &on, false, false), every_five);
        assert_eq!(
            Display::choose(false, &on, true, false),
            Display::Log {
                period: Duration::from_secs(30)
            }
        );
        assert_eq!(
            Display::choose(false, &metrics(false, 30), false, false),
            Display::Off
        );
        assert_eq!(
            Display::choose(false, &metrics(true, 0), false, false),
            Display::Log { period: MIN_PERIOD }
        );
        assert_eq!(
            Display::choose(true, &metrics(true, 2), false, false),
            Display::Log {
                period: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn the_block_is_redrawn_in_place() {
        let mut screen = Screen::default();
        let two = ["a".to_owned(), "b".to_owned()];
        assert_eq!(screen.redraw(&two), "\x1b[?7l\r\x1b[2Ka\n\x1b[2Kb\x1b[J\x1b[?7h");
        // Back up one row to the block's first line before writing it again.
        assert_eq!(
            screen.redraw(&two),
            "\x1b[?7l\x1b[1A\r\x1b[2Ka\n\x1b[2Kb\x1b[J\x1b[?7h"
        );
        // A pipeline gone: the row it used is erased.
        assert_eq!(
            screen.redraw(&two[..1]),
            "\x1b[?7l\x1b[1A\r\x1b[2Ka\x1b[J\x1b[?7h"
        );
        assert_eq!(screen.redraw(&two[..1]), "\x1b[?7l\r\x1b[2Ka\x1b[J\x1b[?7h");
    }

    #[test]
    fn a_line_shows_the_counters_and_the_rate() {
        let mut progress = Progress {
            pipeline: "threatintel/misp".to_owned(),
            counters: Counters {
                pages: 3,
                records: 3000,
                published: 2500,
                dropped: 0,
            },
            rate: 1234.4,
            moved: true,
            done: None,
        };
        assert_eq!(
            progress.terminal_line(),
            "threatintel/misp: 3 pages, 3000 records, 2500 published, 1234/s"
        );
        progress.counters.dropped = 7;
        progress.done = Some(Duration::from_millis(2_340));
        assert_eq!(
            progress.terminal_line(),
            "threatintel/misp: 3 pages, 3000 records, 2500 published, 7 dropped, 1234/s (done in 2.3s)"
        );
    }

    #[test]
    fn the_rate_spans_the_window_and_the_final_one_the_whole_run() {
        let mut tracker = Tracker::new(Duration::from_secs(2));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let published = |published: u64| {
            BTreeMap::from([(
                "unit/progress".to_owned(),
                Counters {
                    published,
                    ..Counters::default()
                },
            )])
        };

        let first = tracker.observe(published(0), at(0));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].rate, first[0].moved), (0.0, true));
        tracker.shown(&first);
        let second = tracker.observe(published(100), at(1));
        assert_eq!((second[0].rate, second[0].moved), (100.0, true));
        // The window is two seconds: the sample of second 0 still counts.
        assert_eq!(tracker.observe(published(500), at(2))[0].rate, 250.0);
        // Now it starts at second 1: 500 more in 2 s.
        let third = tracker.observe(published(600), at(3));
        assert_eq!(third[0].rate, 250.0);
        tracker.shown(&third);
        let unchanged = tracker.observe(published(600), at(4));
        assert!(!unchanged[0].moved);
        assert_eq!(unchanged[0].rate, 50.0);

        let last = tracker.finish(published(600), at(6));
        assert_eq!(last[0].counters.published, 600);
        assert_eq!(last[0].rate, 100.0);
        assert_eq!(last[0].done, Some(Duration::from_secs(6)));

        // A pipeline stopped by reload leaves the display.
        assert!(tracker.observe(BTreeMap::new(), at(7)).is_empty());
        assert!(tracker.tracks.is_empty());
        // One started between two readings is counted from the earlier one.
        let restarted = tracker.finish(published(300), at(10));
        assert_eq!(restarted[0].rate, 100.0);
        assert_eq!(restarted[0].done, Some(Duration::from_secs(3)));
    }
}
