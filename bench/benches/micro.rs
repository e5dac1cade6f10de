//! Micro-benchmarks of the per-document stages, single-threaded (so docs/s is
//! per core): JSON decode + split of a MISP page, the MISP processor chain,
//! and bulk encoding (action + source line, gzip level 1 as the output does).
//! The disk queue has its own bench: `cargo bench -p threatbeat-outputs --bench queue_throughput`.
//!
//! `cargo bench -p threatbeat-bench --bench micro`

use std::io::Write;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use misp_pages::{generated_page, misp_fileset, real_page, records};
use serde_json::json;
use threatbeat_core::Event;

#[path = "support/misp_pages.rs"]
mod misp_pages;

fn benches(c: &mut Criterion) {
    let misp = misp_fileset();
    let generated = generated_page();
    let real = real_page();
    for (name, body) in [("generated", &generated), ("real_fixtures", &real)] {
        let count = records(&misp, body).len() as u64;
        let mut group = c.benchmark_group(format!("{name}_page"));
        group.throughput(Throughput::Elements(count));
        group.measurement_time(Duration::from_secs(5));
        group.bench_function("decode_and_split", |b| b.iter(|| records(&misp, body)));
        let events: Vec<Event> = records(&misp, body).into_iter().map(Event::from_value).collect();
        group.bench_function("processor_chain", |b| {
            b.iter_batched(
                || events.clone(),
                |mut events| {
                    misp.chain.run_batch(&mut events);
                    events
                },
                BatchSize::LargeInput,
            )
        });
        let mut processed = events.clone();
        misp.chain.run_batch(&mut processed);
        group.bench_function("bulk_encode_gzip1", |b| {
            b.iter(|| {
                let mut body = Vec::with_capacity(1 << 20);
                for event in &processed {
                    serde_json::to_writer(
                        &mut body,
                        &json!({"create": {"_index": "logs-ti_threatbeat.misp-default", "_id": event.id()}}),
                    )
                    .unwrap();
                    body.push(b'\n');
                    serde_json::to_writer(&mut body, &event.fields).unwrap();
                    body.push(b'\n');
                }
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
                encoder.write_all(&body).unwrap();
                encoder.finish().unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(micro, benches);
criterion_main!(micro);
