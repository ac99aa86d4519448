//! Resumable maintenance jobs. `user-reports` recomputes, organization by organization, every
//! aggregate the user reports read from the raw events: each batch commits with its cursor, so
//! a killed run resumes where it stopped once its lease lapses, and a lease keeps two runs (in
//! one process or several on one database) from working at once.

use jiff::{SignedDuration, Timestamp};
use std::time::Duration;
use tally_store::{JobRun, Store, StoreError};

pub const USER_REPORTS: &str = "user-reports";

#[derive(Debug, Clone, Copy)]
pub struct RebuildOptions {
    /// Organizations per transaction.
    pub organizations_per_batch: u32,
    /// Pause between batches, to spare a busy database.
    pub throttle: Duration,
    /// How long a run stays claimed without progress; a killed run is resumable after it.
    pub lease: Duration,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions { organizations_per_batch: 20, throttle: Duration::ZERO, lease: Duration::from_secs(60) }
    }
}

/// Who holds a lease: this process, uniquely.
pub fn owner() -> String {
    format!("pid {} ({:08x})", std::process::id(), rand::random::<u32>())
}

/// A run this process holds.
pub struct Claimed {
    pub run: JobRun,
    owner: String,
    lease: SignedDuration,
}

/// Starts the `user-reports` rebuild, or resumes the one a killed process left; `Conflict` while
/// another holder works on it.
pub async fn claim_user_reports(store: &dyn Store, options: &RebuildOptions) -> Result<Claimed, StoreError> {
    let owner = owner();
    let lease = SignedDuration::try_from(options.lease).unwrap_or(SignedDuration::from_secs(60));
    let now = Timestamp::now();
    let run = store.claim_job(USER_REPORTS, &owner, now + lease, now).await?;
    Ok(Claimed { run, owner, lease })
}

impl Claimed {
    /// Works through the remaining organizations; `progress` sees every batch.
    pub async fn finish(self, store: &dyn Store, options: &RebuildOptions, progress: impl Fn(&JobRun)) -> Result<JobRun, StoreError> {
        let Claimed { mut run, owner, lease } = self;
        while run.status == "in_progress" {
            let now = Timestamp::now();
            run = match store.advance_job(&run.id, &owner, options.organizations_per_batch.max(1), now + lease, now).await {
                Ok(next) => next,
                // Someone else holds the run now: it is theirs to finish or abort.
                Err(e @ StoreError::Conflict(_)) => return Err(e),
                Err(e) => {
                    let _ = store.abort_job(&run.id, &e.to_string(), Timestamp::now()).await;
                    return Err(e);
                }
            };
            progress(&run);
            if !options.throttle.is_zero() {
                tokio::time::sleep(options.throttle).await;
            }
        }
        Ok(run)
    }
}

/// Runs (or resumes) the `user-reports` rebuild to completion.
pub async fn rebuild_user_reports(store: &dyn Store, options: RebuildOptions, progress: impl Fn(&JobRun)) -> Result<JobRun, StoreError> {
    let claimed = claim_user_reports(store, &options).await?;
    progress(&claimed.run);
    claimed.finish(store, &options, progress).await
}
