//! What every API simulator shares: an axum server on a free loopback port
//! whose state the test and the handlers both reach, stopped when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A simulator's state as its handlers receive it.
pub type Shared<S> = Arc<Mutex<S>>;

/// A running simulator server. Stops when dropped.
pub struct SimServer<S> {
    state: Shared<S>,
    address: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl<S: Send + 'static> SimServer<S> {
    /// Serves the router `routes` builds over `state` on `127.0.0.1:0`.
    pub async fn start(state: S, routes: impl FnOnce(Shared<S>) -> Router) -> Self {
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let router = routes(Arc::clone(&state));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            state,
            address,
            server: Some((stop, task)),
        }
    }
}

impl<S> SimServer<S> {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The state, for the test to read or change between requests.
    pub fn state(&self) -> MutexGuard<'_, S> {
        lock(&self.state)
    }
}

impl<S> Drop for SimServer<S> {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

/// Locks simulator state; a test that panicked while holding it leaves it usable.
pub fn lock<S>(state: &Mutex<S>) -> MutexGuard<'_, S> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
