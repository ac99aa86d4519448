//! Tally's pure domain: identifiers, usage types, events and their validation, roll-up arithmetic,
//! roles, scopes and API keys. Nothing here touches a database, a socket or a clock it was not given.

pub mod alerts;
pub mod churn;
pub mod entities;
pub mod event;
pub mod ids;
pub mod key;
pub mod llm;
pub mod meter;
pub mod money;
pub mod pricing;
pub mod report;
pub mod role;
pub mod rollup;
pub mod schema;
pub mod scope;
pub mod seats;
pub mod series;
pub mod time;
pub mod usage_type;

pub use event::{EventRejection, LlmFields, LlmStatus, RawEvent, UsageEvent};
pub use ids::{EventId, OrganizationId, TeamId, UserId};
pub use money::Money;
pub use role::Role;
pub use scope::Scope;
pub use usage_type::{Aggregation, UsageType, UsageTypeKey};
