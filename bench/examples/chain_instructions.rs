//! Runs the MISP processor chain a fixed number of times, for instruction
//! counts under callgrind (deterministic, unlike wall time on a shared VM):
//!
//! ```sh
//! cargo build --release -p threatbeat-bench --example chain_instructions
//! for n in 1 3; do
//!   valgrind --tool=callgrind target/release/examples/chain_instructions generated chain $n
//!   valgrind --tool=callgrind target/release/examples/chain_instructions generated clone $n
//! done
//! ```
//!
//! Instructions per document = (total at 3 − total at 1) / (2 × documents), for
//! `chain` (clone, run the chain, free) and `clone` (clone and free only); the
//! chain's own cost is the difference of the two. Pages: `generated` or `real`.

use std::process::ExitCode;

use threatbeat_core::Event;

#[path = "../benches/support/misp_pages.rs"]
mod misp_pages;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (page, run_chain, iterations) = match args.as_slice() {
        [page, mode, iterations] => match (page.as_str(), mode.as_str(), iterations.parse::<usize>()) {
            ("generated", mode @ ("chain" | "clone"), Ok(n)) => {
                (misp_pages::generated_page(), mode == "chain", n)
            }
            ("real", mode @ ("chain" | "clone"), Ok(n)) => (misp_pages::real_page(), mode == "chain", n),
            _ => return usage(),
        },
        _ => return usage(),
    };
    let misp = misp_pages::misp_fileset();
    let events: Vec<Event> = misp_pages::records(&misp, &page)
        .into_iter()
        .map(Event::from_value)
        .collect();
    let mut documents = 0;
    for _ in 0..iterations {
        let mut batch = events.clone();
        if run_chain {
            misp.chain.run_batch(&mut batch);
        }
        documents += batch.len();
    }
    println!("{} records per page, {documents} documents out", events.len());
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: chain_instructions generated|real chain|clone ITERATIONS");
    ExitCode::FAILURE
}
