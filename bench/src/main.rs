//! End-to-end benchmark (issue 7): the MISP simulator holding N generated
//! attributes → the real `threatbeat` binary (release build, full MISP module,
//! default disk queue) → the Elasticsearch simulator; and, in the same run and
//! against the same simulators, the floor pipeline (see `floor.rs`). Both run
//! as child processes measured by `wait4`; bytes are counted by loopback proxies.
//!
//! ```text
//! cargo build --release -p threatbeat -p threatbeat-bench
//! target/release/threatbeat-bench --attributes 100000 --limit 100,1000
//! ```

mod floor;
mod measure;
mod proxy;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use threatbeat_test_support::elasticsearch::ElasticsearchSimulator;
use threatbeat_test_support::misp::{generate_events, MispSimulator, API_KEY};

use crate::measure::{own_cpu_seconds, run_to_exit, ChildCost};
use crate::proxy::CountingProxy;

const AGENT_INDEX: &str = "logs-ti_threatbeat.misp-default";
const TIMEOUT: Duration = Duration::from_secs(3600);

/// Command-line options (`--key value`).
struct Options {
    attributes: usize,
    per_event: usize,
    limits: Vec<usize>,
    agent: PathBuf,
    skip_floor: bool,
    skip_agent: bool,
    /// Extra lines appended under `output.elasticsearch:` (e.g. `worker: 2`).
    output_extra: Vec<String>,
    /// Replaces the default `queue.disk` section when set (e.g. `queue.mem: {}`).
    queue: Option<String>,
    floor_bulk_size: usize,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let beside_me = std::env::current_exe()?.with_file_name("threatbeat");
    let mut options = Options {
        attributes: 100_000,
        per_event: 10,
        limits: vec![1000],
        agent: beside_me,
        skip_floor: false,
        skip_agent: false,
        output_extra: Vec::new(),
        queue: None,
        floor_bulk_size: 1600,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--attributes" => options.attributes = value()?.parse()?,
            "--per-event" => options.per_event = value()?.parse()?,
            "--limit" => {
                options.limits = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--agent" => options.agent = value()?.into(),
            "--output" => options.output_extra.push(value()?),
            "--queue" => options.queue = Some(value()?),
            "--floor-bulk-size" => options.floor_bulk_size = value()?.parse()?,
            "--skip-floor" => options.skip_floor = true,
            "--skip-agent" => options.skip_agent = true,
            other => bail!(
                "unknown option {other}; options: --attributes N --per-event K --limit L[,L...] \
                 --agent PATH --output 'key: value' --queue 'queue.mem: {{}}' --floor-bulk-size B \
                 --skip-floor --skip-agent"
            ),
        }
    }
    if options.per_event == 0 || !options.attributes.is_multiple_of(options.per_event) {
        bail!("--attributes must be a multiple of --per-event (> 0)");
    }
    Ok(options)
}

/// One measured run.
struct Figures {
    label: String,
    documents: usize,
    cost: ChildCost,
    simulators_cpu: f64,
    bytes_to_es: u64,
    bytes_from_misp: u64,
}

impl Figures {
    fn docs_per_second(&self) -> f64 {
        self.documents as f64 / self.cost.wall.as_secs_f64()
    }

    fn print(&self, floor: Option<&Figures>) {
        let ratio = floor.map_or(String::new(), |floor| {
            format!(
                "  {:.0} % of floor",
                100.0 * self.docs_per_second() / floor.docs_per_second()
            )
        });
        println!(
            "{:<28} {:>8} docs {:>7.2} s {:>9.0} docs/s  cpu {:>6.2} s (sys {:>5.2}; {:>6.0} docs/cpu-s)  peak RSS {:>6.1} MiB  \
             to ES {:>7.1} MB  from MISP {:>7.1} MB  simulators cpu {:>6.2} s{ratio}",
            self.label,
            self.documents,
            self.cost.wall.as_secs_f64(),
            self.docs_per_second(),
            self.cost.cpu_seconds,
            self.cost.system_seconds,
            self.documents as f64 / self.cost.cpu_seconds,
            self.cost.peak_rss_kib as f64 / 1024.0,
            self.bytes_to_es as f64 / 1e6,
            self.bytes_from_misp as f64 / 1e6,
            self.simulators_cpu,
        );
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("floor") {
        return floor_child(args.skip(1).collect());
    }
    let options = parse_options(args)?;
    if !options.skip_agent && !options.agent.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p threatbeat` or pass --agent",
            options.agent.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(options))
}

fn floor_child(args: Vec<String>) -> anyhow::Result<()> {
    let [misp_url, es_url, limit, bulk_max_size, expected] = args.as_slice() else {
        bail!("usage: threatbeat-bench floor MISP_URL ES_URL LIMIT BULK_MAX_SIZE EXPECTED");
    };
    let floor_args = floor::FloorArgs {
        misp_url: misp_url.clone(),
        api_key: API_KEY.to_owned(),
        es_url: es_url.clone(),
        limit: limit.parse()?,
        bulk_max_size: bulk_max_size.parse()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shipped = runtime.block_on(floor::run(&floor_args))?;
    if shipped != expected.parse::<u64>()? {
        bail!("the floor shipped {shipped} documents, expected {expected}");
    }
    Ok(())
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let events = options.attributes / options.per_event;
    let start = chrono_now() - events as i64 - 3600;
    let misp = MispSimulator::start(generate_events(events, options.per_event, start)).await;
    println!(
        "N = {} attributes in {events} events of {}; machine: {} cores",
        options.attributes,
        options.per_event,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut floors = Vec::new();
    for &limit in &options.limits {
        let floor = if options.skip_floor {
            None
        } else {
            let figures = run_floor(&options, &misp, limit).await?;
            figures.print(None);
            Some(figures)
        };
        if !options.skip_agent {
            let figures = run_agent(&options, &misp, limit).await?;
            figures.print(floor.as_ref());
        }
        floors.push(floor);
    }
    Ok(())
}

async fn run_floor(options: &Options, misp: &MispSimulator, limit: usize) -> anyhow::Result<Figures> {
    let cluster = ElasticsearchSimulator::start().await;
    let misp_proxy = CountingProxy::start(misp.address()).await?;
    let es_proxy = CountingProxy::start(cluster.address()).await?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("floor")
        .arg(format!("{}/events/restSearch", misp_proxy.url()))
        .arg(es_proxy.url())
        .arg(limit.to_string())
        .arg(options.floor_bulk_size.to_string())
        .arg(options.attributes.to_string())
        .stdin(Stdio::null());
    let cpu_before = own_cpu_seconds();
    let cost = run_to_exit(command, TIMEOUT).await?;
    let simulators_cpu = own_cpu_seconds() - cpu_before;
    let documents = cluster.document_count(floor::FLOOR_INDEX);
    if documents != options.attributes {
        bail!(
            "floor: the cluster holds {documents} documents, expected {}",
            options.attributes
        );
    }
    settle().await;
    Ok(Figures {
        label: format!("floor   limit {limit}"),
        documents,
        cost,
        simulators_cpu,
        bytes_to_es: es_proxy.bytes_to_server(),
        bytes_from_misp: misp_proxy.bytes_to_client(),
    })
}

async fn run_agent(options: &Options, misp: &MispSimulator, limit: usize) -> anyhow::Result<Figures> {
    let cluster = ElasticsearchSimulator::start().await;
    let misp_proxy = CountingProxy::start(misp.address()).await?;
    let es_proxy = CountingProxy::start(cluster.address()).await?;
    let home = tempfile::tempdir()?;
    let mut main = format!(
        "logging.level: warning\noutput.elasticsearch:\n  hosts: [\"{}\"]\n",
        es_proxy.url()
    );
    for line in &options.output_extra {
        main.push_str(&format!("  {line}\n"));
    }
    main.push_str(
        options
            .queue
            .as_deref()
            .unwrap_or("queue.disk:\n  path: diskqueue\n"),
    );
    main.push('\n');
    fs::write(home.path().join("threatbeat.yml"), &main)?;
    fs::create_dir_all(home.path().join("modules.d"))?;
    fs::write(
        home.path().join("modules.d/threatintel.yml"),
        format!(
            "- module: threatintel\n  misp:\n    enabled: true\n    var.url: {}/events/restSearch\n    \
             var.api_token: {API_KEY}\n    var.first_interval: 4000d\n    var.limit: {limit}\n",
            misp_proxy.url()
        ),
    )?;
    let log = fs::File::create(home.path().join("agent.log"))?;
    let mut command = Command::new(&options.agent);
    command
        .current_dir(home.path())
        .args(["run", "--once", "-e", "-c", "threatbeat.yml"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let cpu_before = own_cpu_seconds();
    let cost = run_to_exit(command, TIMEOUT).await;
    let simulators_cpu = own_cpu_seconds() - cpu_before;
    let log_text = fs::read_to_string(home.path().join("agent.log")).unwrap_or_default();
    let cost = cost.with_context(|| format!("agent output:\n{log_text}"))?;
    let documents = cluster.document_count(AGENT_INDEX);
    if documents != options.attributes {
        bail!(
            "agent: the cluster holds {documents} documents, expected {}; agent output:\n{log_text}",
            options.attributes
        );
    }
    settle().await;
    Ok(Figures {
        label: format!("agent   limit {limit}"),
        documents,
        cost,
        simulators_cpu,
        bytes_to_es: es_proxy.bytes_to_server(),
        bytes_from_misp: misp_proxy.bytes_to_client(),
    })
}

/// Lets the proxies see their connections close, so byte counts are complete.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
