//! Memory follows a byte budget, not the size of one event: the MISP
//! fileset's input reads one event of 200 000 attributes (a body of about
//! 80 MB, its `Tag` list after the attributes as MISP writes it) while a
//! counting allocator records the most memory held at once. Not timed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::json;
use threatbeat_test_support::misp::large::{attribute_uuid, LargeEventServer};

/// Counts the bytes allocated by this test binary and their high-water mark.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            let held = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(held, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() {
            if new_size >= layout.size() {
                let held =
                    HELD.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(held, Ordering::Relaxed);
            } else {
                HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The budget: two slices of records (one worked on while the next is cut),
/// the parser's buffers, one element's spool kept in memory, the HTTP
/// client. Far below the body's size; 8 MiB are held when written.
const BUDGET: usize = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_of_200k_attributes_is_read_within_a_fixed_budget() {
    const ATTRIBUTES: usize = 200_000;
    let misp = LargeEventServer::serve(ATTRIBUTES).await;
    let data = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::new_discarding(data.path(), "threatintel/misp");
    let config = manifest_input(
        "threatintel/misp",
        json!({
            "url": misp.url("/events/restSearch"),
            "api_token": "key",
            "current_state": false,
            "first_interval": "24h",
        }),
    );
    let baseline = HELD.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    run_once(&config, &pipeline).await.unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - baseline;

    let page_bytes = misp.state().page_bytes;
    let seen = pipeline.discarded();
    assert_eq!(seen.events, ATTRIBUTES, "every attribute is one record");
    assert!(seen.ids_in_order, "the attributes arrive in the event's order");
    assert_eq!(
        seen.last_uuid.as_deref(),
        Some(attribute_uuid(ATTRIBUTES - 1).as_str())
    );
    assert!(
        seen.every_record_has_the_tags,
        "the event's Tag list, written after the attributes, is in every record"
    );
    assert!(pipeline.stored_cursor().is_some(), "the page's cursor is stored");
    assert!(
        page_bytes > 64 << 20,
        "the event is larger than the budget: {page_bytes} bytes"
    );
    assert!(
        peak < BUDGET,
        "held at most {} MiB for a page of {} MiB (budget {} MiB)",
        peak >> 20,
        page_bytes >> 20,
        BUDGET >> 20
    );
    eprintln!(
        "one event of {ATTRIBUTES} attributes, {} MiB: at most {} MiB held",
        page_bytes >> 20,
        peak >> 20
    );
}
