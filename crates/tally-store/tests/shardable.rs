//! The schema stays shardable by organization (DESIGN.md, scale path): every primary and unique
//! key of a tenant table starts with `organization_id`. Read from PostgreSQL's own catalog.

use tally_store::REFERENCE_TABLES;

#[tokio::test]
async fn every_tenant_key_starts_with_organization_id() {
    let Some(t) = tally_store::testing::postgres().await else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    let (client, connection) = tokio_postgres::connect(&t.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT c.relname::text, con.conname::text, a.attname::text
             FROM pg_constraint con
             JOIN pg_class c ON c.oid = con.conrelid
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = con.conkey[1]
             WHERE con.contype IN ('p', 'u') AND c.relnamespace = current_schema()::regnamespace
             UNION ALL
             SELECT t.relname::text, i.relname::text, a.attname::text
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
             WHERE x.indisunique AND t.relnamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no keys found: is the schema migrated?");
    let mut tenant_tables = 0;
    for row in &rows {
        let (table, key, first): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        if REFERENCE_TABLES.contains(&table.as_str()) {
            continue;
        }
        tenant_tables += 1;
        assert_eq!(first, "organization_id", "{table}.{key} must start with organization_id to stay shardable");
    }
    assert!(tenant_tables >= 8, "expected the tenant tables' keys, saw {tenant_tables}");
}
