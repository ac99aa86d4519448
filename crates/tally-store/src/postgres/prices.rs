//! The LLM price table on PostgreSQL.

use super::map_err;
use crate::Result;
use crate::sql::{self, Dialect};
use tally_domain::OrganizationId;
use tally_domain::llm::prices::{ModelPrice, PriceTable, UnpricedModel};
use tokio_postgres::Client;
use tokio_postgres::types::Json;

pub(super) async fn table(conn: &Client) -> Result<PriceTable> {
    let version: i64 = conn.query_one("SELECT version FROM llm_price_table", &[]).await.map_err(map_err)?.get(0);
    let rows = conn.query("SELECT body FROM llm_prices ORDER BY model", &[]).await.map_err(map_err)?;
    Ok(PriceTable { version, prices: rows.iter().map(|r| r.get::<_, Json<ModelPrice>>(0).0).collect() })
}

async fn bump(tx: &tokio_postgres::Transaction<'_>) -> Result<i64> {
    Ok(tx.query_one("UPDATE llm_price_table SET version = version + 1 RETURNING version", &[]).await.map_err(map_err)?.get(0))
}

pub(super) async fn save(conn: &mut Client, price: &ModelPrice) -> Result<i64> {
    let tx = conn.transaction().await.map_err(map_err)?;
    tx.execute(
        "INSERT INTO llm_prices (model, body) VALUES ($1, $2) ON CONFLICT (model) DO UPDATE SET body = excluded.body",
        &[&price.model, &Json(price)],
    )
    .await
    .map_err(map_err)?;
    let version = bump(&tx).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(version)
}

pub(super) async fn delete(conn: &mut Client, model: &str) -> Result<Option<i64>> {
    let tx = conn.transaction().await.map_err(map_err)?;
    if tx.execute("DELETE FROM llm_prices WHERE model = $1", &[&model]).await.map_err(map_err)? == 0 {
        return Ok(None);
    }
    let version = bump(&tx).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(Some(version))
}

pub(super) async fn unpriced(conn: &Client, org: Option<&OrganizationId>) -> Result<Vec<UnpricedModel>> {
    let sql = sql::unpriced_query(Dialect::Postgres, org.is_some());
    let rows = match org {
        Some(o) => conn.query(&sql, &[&o.as_str()]).await,
        None => conn.query(&sql, &[]).await,
    }
    .map_err(map_err)?;
    Ok(rows.iter().map(|r| UnpricedModel { model: r.get(0), requests: r.get(1), last_seen: r.get(2) }).collect())
}

pub(super) async fn reprice(conn: &mut Client, from: jiff::Timestamp, to: jiff::Timestamp, table: &PriceTable) -> Result<u64> {
    let tx = conn.transaction().await.map_err(map_err)?;
    // As the rebuild job does: ingestion waits while costs and aggregates are replaced.
    tx.batch_execute("LOCK TABLE events IN SHARE MODE").await.map_err(map_err)?;
    let scope = sql::REPRICEABLE.replace("{from}", "$1").replace("{to}", "$2");
    let rows = tx
        .query(&format!("SELECT organization_id, event_id, model, input_tokens, output_tokens, cached_input_tokens {scope}"), &[&from, &to])
        .await
        .map_err(map_err)?;
    let mut organizations = std::collections::BTreeSet::new();
    let update = tx
        .prepare("UPDATE events SET cost_nanos = $3, price_version = $4 WHERE organization_id = $1 AND event_id = $2")
        .await
        .map_err(map_err)?;
    for r in &rows {
        let (org, id, model): (String, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
        let price = model.as_deref().and_then(|m| tally_domain::llm::prices::find(&table.prices, m));
        let tokens = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0);
        let cost = price.map(|p| p.cost(tokens(3), tokens(5), tokens(4)).nanos());
        tx.execute(&update, &[&org, &id, &cost, &price.map(|_| table.version)]).await.map_err(map_err)?;
        organizations.insert(org);
    }
    for org in &organizations {
        super::jobs::rebuild_organization(&tx, org).await?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(rows.len() as u64)
}
