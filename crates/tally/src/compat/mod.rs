//! Drop-in compatible ingestion for teams moving from other metering products: their SDKs keep
//! working, pointed at Tally.

pub mod lago;
pub mod openmeter;
pub mod otlp;
