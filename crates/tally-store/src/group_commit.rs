//! Group commit: concurrent ingest requests queue their events here, and one writer task stores
//! whatever has queued up in a single transaction. Each request is answered only after that
//! transaction committed, so throughput grows with concurrency while durability stays per event.

use crate::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_domain::UsageEvent;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

struct Job {
    events: Vec<UsageEvent>,
    reply: oneshot::Sender<Result<Vec<bool>, StoreError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The queue is full: the caller should answer 503 with `Retry-After`.
    #[error("the ingest queue is full")]
    Overloaded,
    #[error("the writer has shut down")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Called after each commit with the number of events and how long the transaction took.
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

#[derive(Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Starts the writer task. `max_batch` bounds the events per transaction; `queue_depth`
    /// bounds the requests waiting, beyond which callers are told to back off.
    pub fn start(store: Arc<dyn Store>, max_batch: usize, queue_depth: usize, observer: Option<CommitObserver>) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(queue_depth);
        let handle = tokio::spawn(run(store, rx, max_batch, observer));
        (GroupCommitter { queue }, handle)
    }

    /// Stores the events; answers per event whether it was new. Returns once committed.
    pub async fn commit(&self, events: Vec<UsageEvent>) -> Result<Vec<bool>, CommitError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { events, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommitError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => CommitError::Closed,
        })?;
        Ok(answer.await.map_err(|_| CommitError::Closed)??)
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>, max_batch: usize, observer: Option<CommitObserver>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut total = jobs[0].events.len();
        while total < max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    total += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut sizes = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut events = Vec::with_capacity(total);
        for job in jobs {
            sizes.push(job.events.len());
            replies.push(job.reply);
            events.extend(job.events);
        }
        let started = Instant::now();
        let result = store.record_events(events).await;
        if let Some(observe) = &observer {
            observe(total, started.elapsed());
        }
        match result {
            Ok(stored) => {
                let mut rest = stored.as_slice();
                for (size, reply) in sizes.into_iter().zip(replies) {
                    let (mine, tail) = rest.split_at(size);
                    rest = tail;
                    // A caller that went away still had its events committed; nothing to undo.
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            Err(error) => {
                tracing::warn!(%error, events = total, "group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
