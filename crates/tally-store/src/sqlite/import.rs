//! Bulk import on SQLite. Events are staged in a scratch database kept in key order (organization,
//! event id); a commit then stores a whole chunk in one transaction, reading the staged events
//! that are new in key order, storing each and rolling them up a batch of organizations at a
//! time. A commit of half a million events writes each page once for the many events that land
//! on it, where ingestion in small transactions writes nearly a page per event and table
//! (BENCHMARKS.md, ingest).

use super::events::{EVENT_COLUMNS, bind_event, replay};
use super::{SqliteStore, map_err, micros};
use crate::sql::Dialect;
use crate::{Imported, Importer, Result};
use async_trait::async_trait;
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::{AtomicU64, Ordering};
use tally_domain::UsageEvent;

/// The scratch database: a private file that SQLite deletes when the connection closes.
const SCRATCH: &str = "import_scratch";

/// The columns of `events` in the order [`replay`] reads them when asked for the columns that
/// only storing needs: the roll-up's first, then [`STORED_ONLY_COLUMNS`].
const REPLAYED_COLUMNS: &str = "organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status, \
     input_tokens, output_tokens, cost_nanos, latency_ms, properties, received_at, price_version, cached_input_tokens";
const STORED_ONLY_COLUMNS: &str = ", properties, received_at, price_version, cached_input_tokens";

/// Events rolled up at once. Each batch covers a run of organizations in key order, so its size
/// hardly changes how densely pages are written; smaller keeps the import's memory down.
const REPLAY_BATCH: usize = 20_000;

/// Names each importer's staging table apart, so two imports through one store do not mix.
static NEXT_TABLE: AtomicU64 = AtomicU64::new(1);

pub(super) struct SqliteImporter {
    store: SqliteStore,
    table: String,
    staged: usize,
    next_seq: i64,
}

impl SqliteImporter {
    pub(super) fn new(store: SqliteStore) -> Self {
        let table = format!("{SCRATCH}.staged_{}", NEXT_TABLE.fetch_add(1, Ordering::Relaxed));
        SqliteImporter { store, table, staged: 0, next_seq: 0 }
    }
}

impl Drop for SqliteImporter {
    /// Drops the staging table if the writer is free; otherwise it goes when the connection
    /// closes. Never waits: this may run on the async runtime.
    fn drop(&mut self) {
        if let Ok(conn) = self.store.writer.try_lock() {
            let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", self.table));
        }
    }
}

#[async_trait]
impl Importer for SqliteImporter {
    async fn stage(&mut self, events: Vec<UsageEvent>) -> Result<()> {
        let (table, first, n) = (self.table.clone(), self.next_seq, events.len());
        // The table exists from the first staging on (sequence numbers start at 0).
        let create = first == 0;
        self.store.write(move |conn| stage(conn, &table, create, first, &events)).await?;
        self.next_seq += n as i64;
        self.staged += n;
        Ok(())
    }

    fn staged(&self) -> usize {
        self.staged
    }

    async fn commit(&mut self) -> Result<Imported> {
        if self.staged == 0 {
            return Ok(Imported::default());
        }
        let (table, staged) = (self.table.clone(), self.staged as u64);
        let imported = self.store.write(move |conn| commit(conn, &table, staged)).await?;
        self.staged = 0;
        Ok(imported)
    }
}

/// Creates the staging table, attaching the scratch database first if this connection has none.
fn create_table(conn: &Connection, table: &str) -> Result<()> {
    let attached: bool =
        conn.query_row("SELECT count(*) FROM pragma_database_list WHERE name = ?1", [SCRATCH], |r| r.get::<_, i64>(0)).map_err(map_err)?
            > 0;
    if !attached {
        // An empty file name is a private on-disk database, deleted on close; under the
        // connection's temp_store = MEMORY it would be held in memory, so file storage is chosen
        // just for the ATTACH. Nothing in it needs to survive a crash: no journal, no syncs.
        conn.execute_batch(&format!(
            "PRAGMA temp_store = FILE; ATTACH DATABASE '' AS {SCRATCH}; PRAGMA temp_store = MEMORY;
             PRAGMA {SCRATCH}.journal_mode = OFF; PRAGMA {SCRATCH}.synchronous = OFF; PRAGMA {SCRATCH}.cache_size = -4096;"
        ))
        .map_err(map_err)?;
    }
    conn.execute_batch(&format!(
        "CREATE TABLE {table} (
             organization_id TEXT NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
             user_id TEXT NOT NULL, team_id TEXT, usage_type TEXT NOT NULL, quantity REAL NOT NULL, properties TEXT,
             model TEXT, provider TEXT, status TEXT, input_tokens INTEGER, output_tokens INTEGER, cost_nanos INTEGER,
             latency_ms INTEGER, received_at INTEGER NOT NULL, price_version INTEGER, cached_input_tokens INTEGER,
             PRIMARY KEY (organization_id, event_id, seq)
         ) WITHOUT ROWID"
    ))
    .map_err(map_err)
}

fn stage(conn: &mut Connection, table: &str, create: bool, first_seq: i64, events: &[UsageEvent]) -> Result<()> {
    if create {
        create_table(conn, table)?;
    }
    let received_at = micros(jiff::Timestamp::now());
    let tx = conn.transaction().map_err(map_err)?;
    {
        let sql = format!("INSERT INTO {table} ({EVENT_COLUMNS}, seq) VALUES ({})", Dialect::Sqlite.marks(19));
        let mut insert = tx.prepare_cached(&sql).map_err(map_err)?;
        for (seq, e) in (first_seq..).zip(events) {
            bind_event(&mut insert, e, received_at)?;
            insert.raw_bind_parameter(19, seq).map_err(map_err)?;
            insert.raw_execute().map_err(map_err)?;
        }
    }
    tx.commit().map_err(map_err)
}

fn commit(conn: &mut Connection, table: &str, staged: u64) -> Result<Imported> {
    // The first staging of each event that the store does not hold yet, in key order: the order
    // events are stored and rolled up in.
    let new = format!(
        "(SELECT * FROM {table} AS s WHERE NOT EXISTS (SELECT 1 FROM {table} AS earlier \
         WHERE earlier.organization_id = s.organization_id AND earlier.event_id = s.event_id AND earlier.seq < s.seq) \
         AND NOT EXISTS (SELECT 1 FROM main.events AS e WHERE e.organization_id = s.organization_id AND e.event_id = s.event_id))"
    );
    // A commit writes in key order, so it needs little cache: half the writer's usual keeps a
    // large import's memory within bounds (BENCHMARKS.md).
    let usual: i64 = conn.query_row("PRAGMA main.cache_size", [], |r| r.get(0)).map_err(map_err)?;
    conn.execute_batch(&format!("PRAGMA main.cache_size = {}", usual / 2)).map_err(map_err)?;
    let result = store_new(conn, &new);
    conn.execute_batch(&format!("PRAGMA main.cache_size = {usual}")).map_err(map_err)?;
    let accepted = result?;
    conn.execute(&format!("DELETE FROM {table}"), []).map_err(map_err)?;
    Ok(Imported { accepted, duplicates: staged - accepted })
}

/// Stores and rolls up the events of `new` in one transaction; how many.
fn store_new(conn: &mut Connection, new: &str) -> Result<u64> {
    // The scratch table is only read inside the transaction: it has no journal to roll back with.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let accepted = {
        // An event at a time, not one INSERT … SELECT: a statement that writes many rows keeps
        // the original of every page it changes in a statement journal, which temp_store = MEMORY
        // holds in memory (hundreds of megabytes for a large chunk). No ON CONFLICT: what is
        // inserted here was just found missing, and a conflict would mean a roll-up counted twice.
        let mut insert =
            tx.prepare(&format!("INSERT INTO main.events ({REPLAYED_COLUMNS}) VALUES ({})", Dialect::Sqlite.marks(18))).map_err(map_err)?;
        replay(&tx, new, REPLAY_BATCH, STORED_ONLY_COLUMNS, |row| {
            for i in 1..=18 {
                insert.raw_bind_parameter(i, ToSqlOutput::Borrowed(row.get_ref(i).map_err(map_err)?)).map_err(map_err)?;
            }
            insert.raw_execute().map_err(map_err)?;
            Ok(())
        })?
    };
    tx.commit().map_err(map_err)?;
    Ok(accepted)
}
