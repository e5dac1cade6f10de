//! Runs the Elasticsearch simulator until Ctrl-C, for manual runs and for
//! checking the opt-in real-cluster suite itself:
//!
//! ```text
//! cargo run -p threatbeat-test-support --example es_simulator            # prints its URL
//! ES_SIMULATOR_USER=elastic ES_SIMULATOR_PASSWORD=changeme cargo run ...  # require basic auth
//! ```

use threatbeat_test_support::elasticsearch::{Credential, ElasticsearchSimulator};

#[tokio::main]
async fn main() {
    let credentials = match (
        std::env::var("ES_SIMULATOR_USER"),
        std::env::var("ES_SIMULATOR_PASSWORD"),
    ) {
        (Ok(username), Ok(password)) => vec![Credential::Basic {
            username,
            password,
            can_write: true,
        }],
        _ => Vec::new(),
    };
    let simulator = ElasticsearchSimulator::start_with_credentials(credentials).await;
    println!("{}", simulator.url());
    let _ = tokio::signal::ctrl_c().await;
}
