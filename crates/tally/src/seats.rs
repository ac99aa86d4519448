//! Seats, the license ledger job and invoice previews, over the store. The arithmetic is in
//! `tally_domain::seats`; this module finds who is licensed on which plan, asks the store for the
//! audit history it needs, and hands the numbers to the domain.

use crate::jobs;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use tally_domain::OrganizationId;
use tally_domain::entities::{Plan, Subscription};
use tally_domain::report::balance::billing_subscription;
use tally_domain::seats::audit::AuditEvent;
use tally_domain::seats::invoice::{self, InvoicePreview};
use tally_domain::seats::ledger::{self, LedgerEntry, Periods, SeatChange, Terms};
use tally_domain::seats::{RoleCounts, seat_count};
use tally_store::{AuditSource, JobRun, Page, SeatSnapshot, Server, Store, StoreError};

pub const LEDGER_JOB: &str = "ledger";
/// How old a server's last push may be before its figures are refused as missing data.
pub const MAX_PUSH_AGE: SignedDuration = SignedDuration::from_hours(48);

/// Who is billed for seats: an organization on a plan. A self-hosted server's organization
/// counts the seats of the server's realms.
#[derive(Debug, Clone)]
pub struct Licensee {
    pub organization_id: OrganizationId,
    pub subscription: Option<Subscription>,
    pub plan: Option<Plan>,
    /// The realms whose seats it counts, for a server's organization.
    pub realms: Option<Vec<OrganizationId>>,
}

impl Licensee {
    pub fn guest_seat_ratio(&self) -> Option<u32> {
        self.plan.as_ref().and_then(|p| p.seats.guest_seat_ratio)
    }

    fn terms(&self) -> Option<Terms> {
        let (subscription, plan) = (self.subscription.as_ref()?, self.plan.as_ref()?);
        Some(Terms { periods: Periods::of(subscription), minimum_licenses: u64::from(plan.seats.minimum_licenses) })
    }

    /// The organizations whose audit history makes up its seats.
    fn sources(&self) -> &[OrganizationId] {
        self.realms.as_deref().unwrap_or(std::slice::from_ref(&self.organization_id))
    }
}

/// The organization's licensing: the subscription that bills it (`billing_subscription`), its plan, and
/// its realms if it is a server's organization.
pub async fn licensee(store: &dyn Store, org: &OrganizationId) -> Result<Licensee, StoreError> {
    let subscriptions = crate::series::every(|page| store.subscriptions(Some(org), page)).await?;
    let subscription = billing_subscription(&subscriptions).cloned();
    let mut plan = match &subscription {
        Some(s) => store.plan(&s.plan_id).await?,
        None => None,
    };
    let realms = match server_of(store, org).await? {
        Some(server) => Some(store.server_realms(&server.id).await?),
        None => None,
    };
    // A realm without a plan of its own counts guests as its server's plan says.
    if plan.is_none()
        && realms.is_none()
        && let Some(server) = realm_server_of(store, org).await?
    {
        plan = Box::pin(licensee(store, &server.organization_id)).await?.plan;
    }
    Ok(Licensee { organization_id: org.clone(), subscription, plan, realms })
}

/// The server whose organization this is.
pub async fn server_of(store: &dyn Store, org: &OrganizationId) -> Result<Option<Server>, StoreError> {
    Ok(store.servers().await?.into_iter().find(|s| &s.organization_id == org))
}

/// The server this organization is a realm of.
pub async fn realm_server_of(store: &dyn Store, org: &OrganizationId) -> Result<Option<Server>, StoreError> {
    match store.realm_server(org).await? {
        Some(id) => store.server(&id).await,
        None => Ok(None),
    }
}

fn seats_of(snapshot: &SeatSnapshot, ratio: Option<u32>) -> u64 {
    match (snapshot.is_active, &snapshot.role_counts) {
        (true, Some(counts)) => seat_count(counts, ratio),
        _ => 0,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RealmSeats {
    pub organization_id: OrganizationId,
    pub seats: u64,
    pub is_active: bool,
    pub source: Option<AuditSource>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeatCount {
    pub organization_id: OrganizationId,
    pub at: Timestamp,
    pub seats: u64,
    pub is_active: bool,
    pub guest_seat_ratio: Option<u32>,
    /// Active users by role, summed over the realms for a server.
    pub role_counts: RoleCounts,
    /// The audit event the count comes from (the latest one, over a server's realms).
    pub source: Option<AuditSource>,
    /// A server's realms, each with its own count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realms: Option<Vec<RealmSeats>>,
}

/// The licensee's seats at `at`, from the audit history.
pub async fn seats_at(store: &dyn Store, licensee: &Licensee, at: Timestamp) -> Result<SeatCount, StoreError> {
    let sources = licensee.sources();
    let snapshots = store.seat_snapshots(sources.iter().map(|o| (o.clone(), at)).collect()).await?;
    let ratio = licensee.guest_seat_ratio();
    let mut counts = RoleCounts::default();
    for snapshot in snapshots.iter().filter(|s| s.is_active) {
        if let Some(c) = &snapshot.role_counts {
            counts = counts.plus(c);
        }
    }
    let source = snapshots.iter().filter_map(|s| s.source.clone()).max_by_key(|s| (s.event_time, s.id.clone()));
    let seats = snapshots.iter().map(|s| seats_of(s, ratio)).sum();
    let realms = licensee.realms.as_ref().map(|_| {
        sources
            .iter()
            .zip(&snapshots)
            .map(|(org, s)| RealmSeats {
                organization_id: org.clone(),
                seats: seats_of(s, ratio),
                is_active: s.is_active,
                source: s.source.clone(),
            })
            .collect()
    });
    // A server is active while any realm is; an organization by its own switch.
    let is_active = match &licensee.realms {
        Some(_) => snapshots.iter().any(|s| s.is_active),
        None => snapshots.first().is_none_or(|s| s.is_active),
    };
    Ok(SeatCount {
        organization_id: licensee.organization_id.clone(),
        at,
        seats,
        is_active,
        guest_seat_ratio: ratio,
        role_counts: counts,
        source,
        realms,
    })
}

/// Why a server's figures cannot be given: it never pushed, or not for too long.
pub fn missing_data(server: &Server, at: Timestamp) -> Option<String> {
    match server.last_push_at {
        None => Some(format!("server {} has never pushed its data", server.id)),
        Some(last) if at > last + MAX_PUSH_AGE => {
            Some(format!("server {}'s last push was at {last}, more than 2 days before {at}: its data is missing since {last}", server.id))
        }
        Some(_) => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("organization {0} has no live subscription with a plan")]
    NoPlan(OrganizationId),
    #[error(transparent)]
    Invoice(#[from] invoice::InvoiceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    pub organization_id: OrganizationId,
    pub plan_id: String,
    pub currency: String,
    pub tier: Option<String>,
    #[serde(flatten)]
    pub preview: InvoicePreview,
}

pub async fn invoice_preview(store: &dyn Store, licensee: &Licensee, now: Timestamp) -> Result<Invoice, PreviewError> {
    let (Some(subscription), Some(plan)) = (&licensee.subscription, &licensee.plan) else {
        return Err(PreviewError::NoPlan(licensee.organization_id.clone()));
    };
    let periods = Periods::of(subscription);
    let last = store.ledger(&licensee.organization_id, Page { limit: 1, offset: 0 }).await?.results;
    let clock = last.first().map_or(now, |l| l.event_time.max(now));
    let (start, _) = periods.containing(clock);
    let rows = store.ledger_since(&licensee.organization_id, start).await?;
    let preview = invoice::preview(&plan.seats, &periods, &rows, now)?;
    Ok(Invoice {
        organization_id: licensee.organization_id.clone(),
        plan_id: plan.id.clone(),
        currency: plan.currency.clone(),
        tier: plan.seats.tier.clone(),
        preview,
    })
}

// ---- self-hosted servers

/// Registers a server: a new id, its organization (`server-<id>` unless one is named), and a
/// secret key with the scope `server:<id>`, returned once.
pub async fn register_server(
    store: &dyn Store,
    hostname: &str,
    contact_email: &str,
    organization: Option<OrganizationId>,
) -> anyhow::Result<(Server, String)> {
    if hostname.trim().is_empty() || hostname.len() > 255 {
        anyhow::bail!("the hostname must be 1 to 255 characters");
    }
    if !contact_email.contains('@') || contact_email.len() > 254 {
        anyhow::bail!("the contact email {contact_email:?} is not an email address");
    }
    let id = uuid_v4();
    let organization_id = match organization {
        Some(o) => o,
        None => OrganizationId::parse(format!("server-{id}"))?,
    };
    let (key_id, secret) = crate::cli::create_key(store, tally_domain::Scope::Server(id.clone()), &format!("server {hostname}")).await?;
    let server = Server {
        id,
        organization_id,
        hostname: hostname.trim().to_owned(),
        contact_email: contact_email.to_owned(),
        key_id,
        created_at: Timestamp::now(),
        last_push_at: None,
        last_audit_log_id: None,
        last_realm_count_id: None,
        last_installation_count_id: None,
    };
    store.save_server(&server, tally_store::Write::Create).await?;
    Ok((server, secret))
}

/// Replaces a server's key: the new secret is returned once, the old key stops working at once.
pub async fn rotate_server_key(store: &dyn Store, server_id: &str) -> anyhow::Result<Option<String>> {
    let Some(mut server) = store.server(server_id).await? else { return Ok(None) };
    let (key_id, secret) =
        crate::cli::create_key(store, tally_domain::Scope::Server(server.id.clone()), &format!("server {}", server.hostname)).await?;
    store.revoke_api_key(&server.key_id, Timestamp::now()).await?;
    server.key_id = key_id;
    store.save_server(&server, tally_store::Write::Replace).await?;
    Ok(Some(secret))
}

/// A random (version 4) UUID in its text form.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

// ---- the ledger job

#[derive(Debug, Clone, Copy)]
pub struct LedgerOptions {
    /// Audit events per transaction.
    pub batch: u32,
    pub lease: std::time::Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions { batch: 10_000, lease: std::time::Duration::from_secs(60) }
    }
}

/// What the job knows about licensees while it runs.
#[derive(Default)]
struct Book {
    /// For each organization seen in the audit history: the licensees its events feed.
    feeds: HashMap<OrganizationId, Vec<OrganizationId>>,
    licensees: HashMap<OrganizationId, Licensee>,
    last: HashMap<OrganizationId, Option<LedgerEntry>>,
}

impl Book {
    async fn licensee(&mut self, store: &dyn Store, org: &OrganizationId) -> Result<Licensee, StoreError> {
        if let Some(l) = self.licensees.get(org) {
            return Ok(l.clone());
        }
        let l = licensee(store, org).await?;
        self.licensees.insert(org.clone(), l.clone());
        Ok(l)
    }

    /// The licensees with terms that an organization's events feed: itself, and the server it
    /// is a realm of.
    async fn feeds(&mut self, store: &dyn Store, org: &OrganizationId) -> Result<Vec<OrganizationId>, StoreError> {
        if let Some(f) = self.feeds.get(org) {
            return Ok(f.clone());
        }
        let mut candidates = vec![org.clone()];
        if let Some(server) = realm_server_of(store, org).await? {
            candidates.push(server.organization_id);
        }
        let mut fed = Vec::new();
        for c in candidates {
            if self.licensee(store, &c).await?.terms().is_some() {
                fed.push(c);
            }
        }
        self.feeds.insert(org.clone(), fed.clone());
        Ok(fed)
    }

    async fn last(&mut self, store: &dyn Store, org: &OrganizationId) -> Result<Option<LedgerEntry>, StoreError> {
        if let Some(l) = self.last.get(org) {
            return Ok(l.clone());
        }
        let l = store.ledger(org, Page { limit: 1, offset: 0 }).await?.results.into_iter().next();
        self.last.insert(org.clone(), l.clone());
        Ok(l)
    }
}

/// A licensee's share of a batch: its events and the distinct moments whose seat counts it needs
/// (at each event, at the latest moment the ledger knows of, and at its first period's start
/// while the ledger is empty).
struct Step<'a> {
    organization_id: OrganizationId,
    licensee: Licensee,
    terms: Terms,
    last: Option<LedgerEntry>,
    events: &'a [&'a AuditEvent],
    moments: Vec<Timestamp>,
    /// Per event, the indexes in `moments` of its time and of the latest moment.
    asked: Vec<(usize, usize)>,
    initial: Option<usize>,
}

impl<'a> Step<'a> {
    async fn new(
        store: &dyn Store,
        book: &mut Book,
        org: &OrganizationId,
        events: &'a [&'a AuditEvent],
    ) -> Result<Option<Step<'a>>, StoreError> {
        let licensee = book.licensee(store, org).await?;
        let Some(terms) = licensee.terms() else { return Ok(None) };
        let last = book.last(store, org).await?;
        let clock = last.as_ref().map(|l| l.event_time);
        let mut moments = Vec::with_capacity(events.len() + 1);
        let mut index: HashMap<Timestamp, usize> = HashMap::with_capacity(events.len() + 1);
        let mut at = |t: Timestamp| {
            *index.entry(t).or_insert_with(|| {
                moments.push(t);
                moments.len() - 1
            })
        };
        let asked = events.iter().map(|e| (at(e.event_time), at(clock.map_or(e.event_time, |c| c.max(e.event_time))))).collect();
        let initial = last.is_none().then(|| at(terms.periods.first_start()));
        Ok(Some(Step { organization_id: org.clone(), licensee, terms, last, events, moments, asked, initial }))
    }

    fn queries(&self) -> impl Iterator<Item = (OrganizationId, Timestamp)> + '_ {
        let sources = self.licensee.sources();
        self.moments.iter().flat_map(move |t| sources.iter().map(move |o| (o.clone(), *t)))
    }

    /// The rows the ledger gains, given the snapshots its queries asked for (in their order).
    fn rows(&self, snapshots: &[SeatSnapshot], until: Timestamp) -> Vec<LedgerEntry> {
        let ratio = self.licensee.guest_seat_ratio();
        let seats: Vec<u64> = match self.licensee.sources().len() {
            // A server without realms yet: no seats at any moment.
            0 => vec![0; self.moments.len()],
            per_moment => snapshots.chunks(per_moment).map(|m| m.iter().map(|s| seats_of(s, ratio)).sum()).collect(),
        };
        let changes: Vec<SeatChange> = self
            .events
            .iter()
            .zip(&self.asked)
            .map(|(e, (then, latest))| SeatChange {
                event_time: e.event_time,
                audit_organization_id: e.organization_id.to_string(),
                audit_id: e.id.clone(),
                seats_then: seats[*then],
                seats_latest: seats[*latest],
            })
            .collect();
        let initial = self.initial.map_or(0, |i| seats[i]);
        ledger::advance(self.organization_id.as_str(), &self.terms, self.last.as_ref(), initial, &changes, until)
    }
}

/// The ledger rows a batch of events (in time order) and renewals up to `until` make, with one
/// store call for every seat count the batch needs.
async fn batch_rows(
    store: &dyn Store,
    book: &mut Book,
    by_licensee: &BTreeMap<OrganizationId, Vec<&AuditEvent>>,
    until: Timestamp,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut steps = Vec::new();
    for (org, events) in by_licensee {
        steps.extend(Step::new(store, book, org, events).await?);
    }
    let queries: Vec<(OrganizationId, Timestamp)> = steps.iter().flat_map(Step::queries).collect();
    let snapshots = store.seat_snapshots(queries).await?;
    let mut entries = Vec::new();
    let mut offset = 0;
    for step in &steps {
        let n = step.moments.len() * step.licensee.sources().len();
        let rows = step.rows(&snapshots[offset..offset + n], until);
        offset += n;
        if let Some(newest) = rows.last() {
            book.last.insert(step.organization_id.clone(), Some(newest.clone()));
        }
        entries.extend(rows);
    }
    Ok(entries)
}

/// Runs the ledger job to completion: every unprocessed audit event becomes ledger rows for the
/// licensees it feeds, batch by batch (each batch one transaction with the events marked
/// processed), then every licensee's ledger is renewed up to now. A lease keeps two runs from
/// working at once; a run that finds another holding it fails with `Conflict`.
pub async fn run_ledger(store: &dyn Store, options: LedgerOptions, progress: impl Fn(&JobRun)) -> Result<JobRun, StoreError> {
    let owner = jobs::owner();
    let lease = SignedDuration::try_from(options.lease).unwrap_or(SignedDuration::from_secs(60));
    let now = Timestamp::now();
    let mut run = store.claim_job(LEDGER_JOB, &owner, now + lease, now).await?;
    let mut book = Book::default();
    let result = async {
        let mut after = None;
        loop {
            let events = store.unprocessed_audit_events(after.clone(), options.batch.max(1)).await?;
            after = events.last().map(|e| (e.event_time, e.organization_id.clone(), e.id.clone()));
            let now = Timestamp::now();
            let finished = events.is_empty();
            let mut by_licensee: BTreeMap<OrganizationId, Vec<&AuditEvent>> = BTreeMap::new();
            for e in &events {
                for l in book.feeds(store, &e.organization_id).await? {
                    by_licensee.entry(l).or_default().push(e);
                }
            }
            if finished {
                // Renew every licensee up to now, also those without new events.
                for s in crate::series::every(|page| store.subscriptions(None, page)).await? {
                    by_licensee.entry(s.organization_id).or_default();
                }
            }
            let until = events.last().map_or(now, |e| e.event_time);
            let entries = batch_rows(store, &mut book, &by_licensee, until).await?;
            let processed = events.iter().map(|e| (e.organization_id.clone(), e.id.clone())).collect();
            run = store.commit_ledger(&run.id, &owner, entries, processed, now + lease, now, finished).await?;
            progress(&run);
            if finished {
                return Ok(run.clone());
            }
        }
    }
    .await;
    // A lost lease is someone else's run now; any other failure ends this one.
    if let Err(e) = &result
        && !matches!(e, StoreError::Conflict(_))
    {
        let _ = store.abort_job(&run.id, &e.to_string(), Timestamp::now()).await;
    }
    result
}

/// Runs the ledger job every hour while the server runs; a run another process holds is left
/// to it.
pub async fn hourly_ledger(store: std::sync::Arc<dyn Store>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_ledger(store.as_ref(), LedgerOptions::default(), |_| {}).await {
            Ok(run) => tracing::info!(run = %run.id, processed = run.processed, "ledger job done"),
            Err(StoreError::Conflict(holder)) => tracing::info!(%holder, "ledger job already running elsewhere"),
            Err(e) => tracing::warn!(error = %e, "ledger job failed; retrying next hour"),
        }
    }
}
