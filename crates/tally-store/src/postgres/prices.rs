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
