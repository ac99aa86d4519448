//! The LLM price table on SQLite.

use super::{map_err, timestamp};
use crate::sql::{self, Dialect};
use crate::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior, params};
use tally_domain::OrganizationId;
use tally_domain::llm::prices::{ModelPrice, PriceTable, UnpricedModel};

pub(super) fn table(conn: &Connection) -> Result<PriceTable> {
    let version: i64 = conn.query_row("SELECT version FROM llm_price_table", [], |r| r.get(0)).map_err(map_err)?;
    let mut stmt = conn.prepare_cached("SELECT body FROM llm_prices ORDER BY model").map_err(map_err)?;
    let bodies = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(map_err)?;
    let mut prices = Vec::new();
    for body in bodies {
        prices.push(serde_json::from_str(&body.map_err(map_err)?).map_err(StoreError::corrupt)?);
    }
    Ok(PriceTable { version, prices })
}

/// Runs a change and raises the version, in one transaction; `None` if nothing changed.
fn change(conn: &mut Connection, apply: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<usize>) -> Result<Option<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    if apply(&tx)? == 0 {
        return Ok(None);
    }
    let version: i64 =
        tx.query_row("UPDATE llm_price_table SET version = version + 1 RETURNING version", [], |r| r.get(0)).map_err(map_err)?;
    tx.commit().map_err(map_err)?;
    Ok(Some(version))
}

pub(super) fn save(conn: &mut Connection, price: &ModelPrice) -> Result<i64> {
    let body = serde_json::to_string(price).map_err(|e| StoreError::Internal(e.to_string()))?;
    let version = change(conn, |tx| {
        tx.execute(
            "INSERT INTO llm_prices (model, body) VALUES (?1, ?2) ON CONFLICT (model) DO UPDATE SET body = excluded.body",
            params![price.model, body],
        )
        .map_err(map_err)
    })?;
    version.ok_or_else(|| StoreError::Internal("a price upsert changed nothing".into()))
}

pub(super) fn delete(conn: &mut Connection, model: &str) -> Result<Option<i64>> {
    change(conn, |tx| tx.execute("DELETE FROM llm_prices WHERE model = ?1", [model]).map_err(map_err))
}

pub(super) fn unpriced(conn: &Connection, org: Option<&OrganizationId>) -> Result<Vec<UnpricedModel>> {
    let mut stmt = conn.prepare_cached(&sql::unpriced_query(Dialect::Sqlite, org.is_some())).map_err(map_err)?;
    let mut rows = match org {
        Some(o) => stmt.query([o.as_str()]),
        None => stmt.query([]),
    }
    .map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(UnpricedModel {
            model: r.get(0).map_err(map_err)?,
            requests: r.get(1).map_err(map_err)?,
            last_seen: timestamp(r.get(2).map_err(map_err)?)?,
        });
    }
    Ok(out)
}

/// A request to re-price: organization, event id, model, input, cached input and output tokens.
type Priceable = (String, String, Option<String>, Option<i64>, Option<i64>, Option<i64>);

pub(super) fn reprice(conn: &mut Connection, from: jiff::Timestamp, to: jiff::Timestamp, table: &PriceTable) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
    let scope = sql::REPRICEABLE.replace("{from}", "?1").replace("{to}", "?2");
    let rows: Vec<Priceable> = {
        let mut stmt = tx
            .prepare(&format!("SELECT organization_id, event_id, model, input_tokens, cached_input_tokens, output_tokens {scope}"))
            .map_err(map_err)?;
        let rows = stmt
            .query_map(params![super::micros(from), super::micros(to)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .map_err(map_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_err)?
    };
    let mut organizations = std::collections::BTreeSet::new();
    {
        let mut update = tx
            .prepare("UPDATE events SET cost_nanos = ?3, price_version = ?4 WHERE organization_id = ?1 AND event_id = ?2")
            .map_err(map_err)?;
        for (org, id, model, input, cached, output) in &rows {
            let price = model.as_deref().and_then(|m| tally_domain::llm::prices::find(&table.prices, m));
            let cost = price.map(|p| p.cost(input.unwrap_or(0), cached.unwrap_or(0), output.unwrap_or(0)).nanos());
            update.execute(params![org, id, cost, price.map(|_| table.version)]).map_err(map_err)?;
            organizations.insert(org.clone());
        }
    }
    for org in &organizations {
        super::jobs::rebuild_organization(&tx, org)?;
    }
    tx.commit().map_err(map_err)?;
    Ok(rows.len() as u64)
}
