use std::future::Future;
use std::net::SocketAddr;

use quinn::{RecvStream, SendStream};
use tracing::{debug, warn};

use crate::Endpoint;

/// Accepts connections until the endpoint closes, and runs `handler` on every
/// bidirectional stream in its own task. A peer whose certificate the cluster
/// CA did not sign never gets past the handshake.
pub async fn serve<F, Fut>(endpoint: Endpoint, handler: F)
where
    F: Fn(SocketAddr, SendStream, RecvStream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some(incoming) = endpoint.quinn().accept().await {
        let handler = handler.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    warn!(%peer, error = %e, "refused connection (handshake failed)");
                    return;
                }
            };
            loop {
                match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        tokio::spawn(handler.clone()(peer, send, recv));
                    }
                    Err(e) => {
                        debug!(%peer, reason = %e, "connection closed");
                        return;
                    }
                }
            }
        });
    }
}
