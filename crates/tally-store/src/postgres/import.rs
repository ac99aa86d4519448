//! Bulk import on PostgreSQL. Events are copied (binary `COPY`) into a temporary table on one
//! connection; a commit then stores a whole chunk with one `INSERT … SELECT` in key order whose
//! `RETURNING` rows — exactly the events that were new, so a concurrent writer of the same event
//! cannot make one count twice — feed the roll-ups, 50,000 at a time in key order.

use super::events::{apply, event_row};
use super::map_err;
use crate::{EventColumns, Imported, Importer, Result};
use async_trait::async_trait;
use jiff::Timestamp;
use tally_domain::UsageEvent;
use tally_domain::rollup::Rollup;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

const STAGED_COLUMNS: &str = "organization_id, event_id, seq, ts, user_id, team_id, usage_type, quantity, properties, model, \
     provider, status, input_tokens, output_tokens, cost_nanos, latency_ms, received_at, price_version, cached_input_tokens";

const STAGED_TYPES: [Type; 19] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::INT8,
];

/// The staging table, temporary: it goes with the importer's own connection.
const TABLE: &str = "import_staged";

pub(super) struct PostgresImporter {
    /// Taken out of the pool, so that the temporary table is dropped with the connection.
    conn: deadpool_postgres::ClientWrapper,
    staged: usize,
    next_seq: i64,
}

impl PostgresImporter {
    pub(super) fn new(conn: deadpool_postgres::Object) -> Self {
        PostgresImporter { conn: deadpool_postgres::Object::take(conn), staged: 0, next_seq: 0 }
    }
}

#[async_trait]
impl Importer for PostgresImporter {
    async fn stage(&mut self, events: Vec<UsageEvent>) -> Result<()> {
        // The table exists from the first staging on (sequence numbers start at 0 and never reset).
        if self.next_seq == 0 {
            let columns = STAGED_COLUMNS.split(", ").zip(STAGED_TYPES.iter()).map(|(c, t)| format!("{c} {}", t.name()));
            let ddl = format!("CREATE TEMPORARY TABLE {TABLE} ({})", columns.collect::<Vec<_>>().join(", "));
            self.conn.batch_execute(&ddl).await.map_err(map_err)?;
        }
        let received_at = Timestamp::now();
        let sink = self.conn.copy_in(&format!("COPY {TABLE} ({STAGED_COLUMNS}) FROM STDIN (FORMAT binary)")).await.map_err(map_err)?;
        let writer = BinaryCopyInWriter::new(sink, &STAGED_TYPES);
        let mut writer = std::pin::pin!(writer);
        for (seq, e) in (self.next_seq..).zip(&events) {
            let c = EventColumns::of(e);
            let row: [&(dyn ToSql + Sync); 19] = [
                &e.organization_id.as_str(),
                &e.id.as_str(),
                &seq,
                &e.timestamp,
                &e.user_id.as_str(),
                &c.team_id,
                &e.usage_type.as_str(),
                &e.quantity,
                &c.properties,
                &c.model,
                &c.provider,
                &c.status,
                &c.input_tokens,
                &c.output_tokens,
                &c.cost_nanos,
                &c.latency_ms,
                &received_at,
                &c.price_version,
                &c.cached_input_tokens,
            ];
            writer.as_mut().write(&row).await.map_err(map_err)?;
        }
        writer.finish().await.map_err(map_err)?;
        self.next_seq += events.len() as i64;
        self.staged += events.len();
        Ok(())
    }

    fn staged(&self) -> usize {
        self.staged
    }

    async fn commit(&mut self) -> Result<Imported> {
        if self.staged == 0 {
            return Ok(Imported::default());
        }
        const BATCH: i32 = 50_000;
        let tx = self.conn.transaction().await.map_err(map_err)?;
        // The first staging of each event, stored unless already there; what was stored comes
        // back (PostgreSQL runs the insert to completion and keeps its rows for the fetches).
        let statement = tx
            .prepare(&format!(
                "WITH stored AS (
                     INSERT INTO events (organization_id, event_id, ts, user_id, team_id, usage_type, quantity, properties, model,
                         provider, status, input_tokens, output_tokens, cost_nanos, latency_ms, received_at, price_version,
                         cached_input_tokens)
                     SELECT DISTINCT ON (organization_id, event_id) organization_id, event_id, ts, user_id, team_id, usage_type,
                         quantity, properties::jsonb, model, provider, status, input_tokens, output_tokens, cost_nanos, latency_ms,
                         received_at, price_version, cached_input_tokens
                     FROM {TABLE} ORDER BY organization_id, event_id, seq
                     ON CONFLICT DO NOTHING
                     RETURNING organization_id, event_id, ts, user_id, team_id, usage_type, quantity, model, provider, status,
                         input_tokens, output_tokens, cost_nanos, latency_ms)
                 SELECT * FROM stored ORDER BY organization_id, event_id"
            ))
            .await
            .map_err(map_err)?;
        let portal = tx.bind(&statement, &[]).await.map_err(map_err)?;
        let mut accepted = 0u64;
        loop {
            let rows = tx.query_portal(&portal, BATCH).await.map_err(map_err)?;
            if rows.is_empty() {
                break;
            }
            accepted += rows.len() as u64;
            let batch = rows.iter().map(event_row).collect::<Result<Vec<_>>>()?;
            apply(&tx, &Rollup::of(&batch)).await?;
        }
        drop(portal);
        tx.execute(&format!("TRUNCATE {TABLE}"), &[]).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        let staged = std::mem::take(&mut self.staged) as u64;
        Ok(Imported { accepted, duplicates: staged - accepted })
    }
}
