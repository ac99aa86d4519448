//! `tally keys`: create (the secret is printed once, alone on stdout), list, revoke.

use clap::Subcommand;
use jiff::Timestamp;
use std::sync::Arc;
use tally_domain::Scope;
use tally_store::{ApiKey, Store};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (only this once).
    Create {
        /// admin, ingest, org:<id>, user:<id> or server:<uuid>.
        #[arg(long, value_parser = |s: &str| Scope::parse(s).map_err(|e| e.to_string()))]
        scope: Scope,
        /// A label to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id; it stops working at once.
    Revoke { id: String },
}

/// Creates a key; answers its id and its secret (shown only this once).
pub async fn create(store: &dyn Store, scope: Scope, name: &str) -> anyhow::Result<(String, String)> {
    let material = tally_domain::key::generate();
    let key = ApiKey {
        id: format!("key_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
        name: name.to_owned(),
        scope,
        digest: material.digest,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    store.create_api_key(&key).await?;
    Ok((key.id, material.secret))
}

pub async fn run(store: Arc<dyn Store>, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { scope, name } => {
            println!("{}", create(store.as_ref(), scope, &name).await?.1);
        }
        KeysCommand::List => {
            println!("{:<18} {:<24} {:<28} {:<26} revoked", "id", "scope", "name", "created");
            for k in store.api_keys().await? {
                let revoked = k.revoked_at.map_or(String::new(), |t| t.to_string());
                println!("{:<18} {:<24} {:<28} {:<26} {revoked}", k.id, k.scope.to_string(), k.name, k.created_at.to_string());
            }
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke_api_key(&id, Timestamp::now()).await? {
                anyhow::bail!("no active key with id {id:?}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}
