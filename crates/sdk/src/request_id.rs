//! The client request an SDK call works for, carried to the nodes with
//! every fragment read and write (`NodeRequest::{Put,Get}Fragment`'s
//! `request`) so that their log lines name it. A frontend runs the work of
//! a request inside [`with_request_id`]; the SDK reads it where it builds
//! fragment requests, and carries it into the tasks it spawns for one call
//! (task-locals are not inherited by spawned tasks).

use std::future::Future;

use tessera_types::RequestId;

tokio::task_local! {
    static CURRENT: Option<RequestId>;
}

/// Runs `work` as the work of request `id`: fragment requests it makes,
/// also from tasks the SDK spawns for it, carry `id`.
pub async fn with_request_id<F: Future>(id: RequestId, work: F) -> F::Output {
    CURRENT.scope(Some(id), work).await
}

/// The request the current task works for, if any.
pub fn current_request_id() -> Option<RequestId> {
    CURRENT.try_with(|id| *id).ok().flatten()
}

/// `work`, to be spawned, working for the current task's request: for a
/// frontend or the SDK handing part of a request to a task of its own.
pub fn carry_request_id<F: Future>(work: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(current_request_id(), work)
}
