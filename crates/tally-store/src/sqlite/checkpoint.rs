//! WAL checkpoints on their own thread. With SQLite's automatic checkpoints the writer copies the
//! WAL back into the database inside a commit, so ingestion stalls while it does; here the writer
//! only appends to the WAL and a second connection checkpoints in the background (a passive
//! checkpoint never blocks the writer). `journal_size_limit` truncates the WAL file once SQLite
//! starts it over after a complete checkpoint.

use super::{connect, map_err};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

const IDLE_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(path: PathBuf) -> Checkpointer {
        let (nudge, nudged) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("tally-checkpoint".into())
            .spawn(move || run(path, nudged))
            .map_err(|e| tracing::error!(error = %e, "cannot start the checkpoint thread; the WAL will only be checkpointed on close"))
            .ok();
        Checkpointer { nudge: Some(nudge), thread }
    }

    /// Tells the thread that a transaction committed. Never blocks: one pending nudge is enough.
    pub(super) fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            let _ = nudge.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(path: PathBuf, nudged: Receiver<()>) {
    let conn = match connect(&path) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(%error, "checkpoint connection failed");
            return;
        }
    };
    loop {
        let last = match nudged.recv_timeout(IDLE_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        // (busy, frames in the WAL, frames checkpointed)
        let result =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
        match result.map_err(map_err) {
            Ok((_, frames, done)) => tracing::trace!(frames, done, "checkpoint"),
            Err(error) => tracing::warn!(%error, "checkpoint failed"),
        }
        if last {
            return;
        }
    }
}
