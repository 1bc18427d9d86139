use std::future::Future;

use quinn::{RecvStream, SendStream};
use tracing::{debug, warn};

use crate::{Endpoint, PeerIdentity};

/// Accepts connections until the endpoint closes, and runs `handler` on every
/// bidirectional stream in its own task, with the peer's identity (what
/// its certificate names). A peer whose certificate the cluster CA did not
/// sign never gets past the handshake.
pub async fn serve<F, Fut>(endpoint: Endpoint, handler: F)
where
    F: Fn(PeerIdentity, SendStream, RecvStream) -> Fut + Clone + Send + Sync + 'static,
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
            let identity = PeerIdentity::of(&conn);
            loop {
                match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        tokio::spawn(handler.clone()(identity.clone(), send, recv));
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
