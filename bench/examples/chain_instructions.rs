//! Runs the MISP processor chain a fixed number of times, for instruction
//! counts under callgrind (deterministic, unlike wall time on a shared VM):
//!
//! ```sh
//! cargo build --release -p threatbeat-bench --example chain_instructions
//! for n in 1 3; do
//!   valgrind --tool=callgrind target/release/examples/chain_instructions generated chain $n
//!   valgrind --tool=callgrind target/release/examples/chain_instructions generated clone $n
//!   valgrind --tool=callgrind target/release/examples/chain_instructions generated encode $n
//! done
//! ```
//!
//! Instructions per document = (total at 3 − total at 1) / (2 × documents), for
//! `chain` (clone, run the chain, free), `clone` (clone and free only) and
//! `encode` (clone, run the chain, encode for the queue, free); the chain's own
//! cost is `chain` − `clone`, the encoding's `encode` − `chain`. Pages:
//! `generated` or `real`.

use std::process::ExitCode;

use threatbeat_core::Event;

#[path = "../benches/support/misp_pages.rs"]
mod misp_pages;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (page, mode, iterations) = match args.as_slice() {
        [page, mode, iterations] => match (page.as_str(), mode.as_str(), iterations.parse::<usize>()) {
            ("generated", mode @ ("chain" | "clone" | "encode"), Ok(n)) => {
                (misp_pages::generated_page(), mode, n)
            }
            ("real", mode @ ("chain" | "clone" | "encode"), Ok(n)) => (misp_pages::real_page(), mode, n),
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
        if mode != "clone" {
            misp.chain.run_batch(&mut batch);
        }
        documents += batch.len();
        if mode == "encode" {
            for event in batch {
                if let Err(error) = event.encode() {
                    eprintln!("encoding failed: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("{} records per page, {documents} documents out", events.len());
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: chain_instructions generated|real chain|clone|encode ITERATIONS");
    ExitCode::FAILURE
}
