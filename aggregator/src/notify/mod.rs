//! Notifications: what the decision log says people must know at once (a Region taken out or
//! put back, a correlated failure, fail-open, an override, repeated reconcile failures, a
//! silent vantage, maintenance) sent to the `[[notify]]` sinks. Delivery never sits in the
//! decision path: [`Notifier::notify`] filters, drops a repeated event id, and `try_send`s to
//! one bounded queue per sink; each sink's own task ([`delivery`]) sends with a time limit per
//! attempt, retries with the one [`vantage_runtime::Backoff`] and dead-letters after
//! `max_attempts`, all counted in `vantage_notify_*`. A sink that hangs only fills its queue.

pub mod delivery;
pub mod event;
mod hooks;
pub mod silence;
pub mod sinks;

pub use event::{NotifyEvent, EVENT_SCHEMA_VERSION};
pub use sinks::{Sink, SinkError, SinkSetupError};

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use vantage_protocol::config::{EventKind, FleetConfig, NotifySection, Severity};
use vantage_runtime::Backoff;

/// Metric names (`sink` label: the `[[notify]]` name).
pub mod names {
    /// Events delivered.
    pub const SENT_TOTAL: &str = "vantage_notify_sent_total";
    /// Failed attempts that were retried.
    pub const RETRIES_TOTAL: &str = "vantage_notify_retries_total";
    /// Events given up after `max_attempts`.
    pub const DEAD_LETTER_TOTAL: &str = "vantage_notify_dead_letter_total";
    /// Events dropped because the sink's queue was full.
    pub const DROPPED_TOTAL: &str = "vantage_notify_dropped_total";
}

/// Event ids remembered for deduplication.
pub const DEDUP_MEMORY: usize = 4096;

/// Which events a sink wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Empty: every kind.
    pub kinds: BTreeSet<EventKind>,
    /// Empty: every service. Fleet-wide events (no service) always pass.
    pub services: BTreeSet<String>,
    pub min_severity: Option<Severity>,
}

impl Filter {
    pub fn of(section: &NotifySection) -> Filter {
        Filter {
            kinds: section.event_kinds(),
            services: section
                .services
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            min_severity: Some(section.min_severity()),
        }
    }

    /// True when `event` goes to this sink; a test event always does.
    pub fn passes(&self, event: &NotifyEvent) -> bool {
        if event.kind == EventKind::Test {
            return true;
        }
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && (self.services.is_empty()
                || event
                    .service
                    .as_ref()
                    .is_none_or(|s| self.services.contains(s)))
            && self.min_severity.is_none_or(|m| event.severity >= m)
    }
}

/// How deliveries retry: the fleet file sets attempts and time limits per sink; the backoff
/// between attempts is the same for all (tests shorten it).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub backoff: Backoff,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

/// One sink's end of the dispatcher.
struct Route {
    name: String,
    filter: Filter,
    queue: mpsc::Sender<NotifyEvent>,
}

/// Recently seen event ids, bounded: the oldest is forgotten first.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Seen {
    /// True the first time `id` is seen (within the memory).
    fn first(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= DEDUP_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

/// The dispatcher the aggregator holds: filters, deduplicates and queues; never waits.
pub struct Notifier {
    routes: Vec<Route>,
    seen: Mutex<Seen>,
    /// `[notifications] status_url`, for the events' links.
    status_url: Option<String>,
    fleet: String,
}

/// What [`Notifier::notify`] did with one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dispatched {
    /// Sinks it was queued for.
    pub queued: Vec<String>,
    /// Sinks whose queue was full.
    pub dropped: Vec<String>,
    /// The id was seen before: nothing was queued.
    pub duplicate: bool,
}

impl Notifier {
    /// Starts one delivery task per sink (must run inside a Tokio runtime).
    pub fn start(
        fleet: &FleetConfig,
        sinks: Vec<(NotifySection, Sink)>,
        tuning: Tuning,
    ) -> Notifier {
        let mut routes = Vec::new();
        for (section, sink) in sinks {
            let (tx, rx) = mpsc::channel(section.queue());
            let name = section.name.get_ref().clone();
            tokio::spawn(delivery::run(
                name.clone(),
                sink,
                rx,
                delivery::Limits {
                    timeout: section.timeout(),
                    max_attempts: section.max_attempts(),
                    backoff: tuning.backoff,
                },
            ));
            routes.push(Route {
                name,
                filter: Filter::of(&section),
                queue: tx,
            });
        }
        Notifier {
            routes,
            seen: Mutex::new(Seen::default()),
            status_url: fleet
                .notifications
                .status_url
                .as_ref()
                .map(|u| u.get_ref().trim_end_matches('/').to_owned()),
            fleet: fleet.fleet.name.get_ref().clone(),
        }
    }

    /// Opens every configured sink (secrets read, clients built) and starts them.
    pub async fn from_config(
        fleet: &FleetConfig,
        tuning: Tuning,
    ) -> Result<Notifier, SinkSetupError> {
        let mut sinks = Vec::new();
        for section in &fleet.notify {
            sinks.push((section.clone(), Sink::open(section).await?));
        }
        Ok(Self::start(fleet, sinks, tuning))
    }

    /// True when no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// An event of this fleet, with its link to the status page.
    pub fn event(
        &self,
        kind: EventKind,
        at_ms: u64,
        service: Option<&str>,
        region: Option<&str>,
        reason: String,
    ) -> NotifyEvent {
        NotifyEvent::new(&self.fleet, kind, at_ms, service, region, reason)
            .with_link(self.status_url.as_deref())
    }

    /// Queues `event` for every sink whose filter passes it, once per event id. Never waits:
    /// a full queue drops the event for that sink and counts it.
    pub fn notify(&self, event: NotifyEvent) -> Dispatched {
        let mut out = Dispatched::default();
        if !crate::service::lock(&self.seen).first(&event.id) {
            out.duplicate = true;
            return out;
        }
        for route in &self.routes {
            if !route.filter.passes(&event) {
                continue;
            }
            match route.queue.try_send(event.clone()) {
                Ok(()) => out.queued.push(route.name.clone()),
                Err(_) => {
                    metrics::counter!(names::DROPPED_TOTAL, "sink" => route.name.clone())
                        .increment(1);
                    tracing::warn!(sink = %route.name, id = %event.id, "notification queue full: event dropped");
                    out.dropped.push(route.name.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, service: Option<&str>) -> NotifyEvent {
        NotifyEvent::new("f", kind, 1, service, Some("eu-west-1"), "r".into())
    }

    #[test]
    fn filter_by_kind_service_and_severity() {
        let f = Filter {
            kinds: [EventKind::RegionOut, EventKind::Override].into(),
            services: ["orders".to_owned()].into(),
            min_severity: Some(Severity::Warning),
        };
        assert!(f.passes(&ev(EventKind::RegionOut, Some("orders"))));
        assert!(!f.passes(&ev(EventKind::RegionOut, Some("payments"))));
        assert!(!f.passes(&ev(EventKind::RegionIn, Some("orders"))));
        // region_in is info, override warning: severity and kind both apply.
        let f2 = Filter {
            kinds: BTreeSet::new(),
            ..f.clone()
        };
        assert!(!f2.passes(&ev(EventKind::RegionIn, Some("orders"))));
        assert!(f.passes(&ev(EventKind::Override, None)));
        assert!(f.passes(&ev(EventKind::Test, Some("payments"))));
    }

    #[test]
    fn seen_remembers_ids_within_a_bounded_memory() {
        let mut s = Seen::default();
        assert!(s.first("a"));
        assert!(!s.first("a"));
        for i in 0..DEDUP_MEMORY {
            assert!(s.first(&i.to_string()));
        }
        assert_eq!(s.order.len(), DEDUP_MEMORY);
        assert!(s.first("a"), "the oldest id is forgotten first");
    }
}
