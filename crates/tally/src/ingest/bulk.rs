//! Bulk loading, for `tally import` and the benchmarks' generated data: events are staged in the
//! store and committed a large chunk per transaction ([`tally_store::Importer`]).

use tally_domain::UsageEvent;
use tally_store::{Imported, Importer, Store};

/// Events per transaction unless told otherwise: about 15 seconds of a SQLite import here.
pub const COMMIT_EVERY: u64 = 500_000;

pub struct BulkLoader {
    importer: Box<dyn Importer>,
    commit_every: u64,
    totals: Imported,
}

impl BulkLoader {
    pub async fn new(store: &dyn Store, commit_every: u64) -> anyhow::Result<Self> {
        Ok(BulkLoader { importer: store.importer().await?, commit_every: commit_every.max(1), totals: Imported::default() })
    }

    /// Stages the events, and commits once `commit_every` are staged.
    pub async fn add(&mut self, events: Vec<UsageEvent>) -> anyhow::Result<()> {
        self.importer.stage(events).await?;
        if self.importer.staged() as u64 >= self.commit_every {
            self.commit().await?;
        }
        Ok(())
    }

    /// Commits what is left; what was stored in all.
    pub async fn finish(mut self) -> anyhow::Result<Imported> {
        self.commit().await?;
        Ok(self.totals)
    }

    async fn commit(&mut self) -> anyhow::Result<()> {
        let imported = self.importer.commit().await?;
        self.totals.accepted += imported.accepted;
        self.totals.duplicates += imported.duplicates;
        Ok(())
    }
}
