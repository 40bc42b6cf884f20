//! Rule 7: how latency and errors become Route 53 weights. Latency is smoothed (EWMA of the
//! vantages' median) so one slow window does not swing traffic; weights are inverse to it and
//! scaled by the share of requests that succeed (`1 - error ratio` over the window: a Region
//! failing 30 % of its requests below `max_failure_ratio` stays in, but with 70 % of the share
//! its latency earns — a gray failure loses traffic without being taken out), never below
//! the floor while in service (0 would mean "only when all others fail" to Route 53), and
//! three bands keep noise from turning into record updates: latency within
//! `latency_tolerance` of the fastest Region's counts as the fastest, and a new weight is
//! written only when it differs from the last by at least `dead_band` and by at least
//! `dead_band_ratio` of it.

use super::Work;
use crate::model::WeightPolicy;
use std::collections::BTreeMap;

/// Smallest latency used for weights, so a zero reading cannot divide by zero.
const MIN_LATENCY_SECONDS: f64 = 1e-6;

/// Weights of the Regions in service, keyed like `in_service_latency` (smoothed latency in
/// seconds, `None` when never measured): see rule 7 of the module documentation. `previous`
/// holds the weights last published for Regions that were already in service; a Region absent
/// from it, or with 0 there, gets no dead band.
pub fn weights_for(
    weights: &WeightPolicy,
    in_service_latency: &BTreeMap<String, Option<f64>>,
    previous: &BTreeMap<String, u8>,
) -> BTreeMap<String, u8> {
    weights_with_errors(weights, in_service_latency, &BTreeMap::new(), previous)
}

/// [`weights_for`] with each Region's error ratio (failed / attempted over the window, 0 when
/// absent): weight = round(255 × fastest / max(latency − tolerance, fastest) × (1 − error
/// ratio)), clamped to [floor, 255], then the dead band.
pub fn weights_with_errors(
    weights: &WeightPolicy,
    in_service_latency: &BTreeMap<String, Option<f64>>,
    error_ratio: &BTreeMap<String, f64>,
    previous: &BTreeMap<String, u8>,
) -> BTreeMap<String, u8> {
    compute(weights, in_service_latency, error_ratio, previous)
        .into_iter()
        .map(|(region, calc)| (region, calc.weight))
        .collect()
}

/// The smoothed latency after this evaluation's samples (seconds); without any, the previous.
pub(super) fn smoothed(
    weights: &WeightPolicy,
    previous: Option<f64>,
    latencies: &mut [f64],
) -> Option<f64> {
    let Some(median) = median(latencies) else {
        return previous;
    };
    let alpha = ewma_alpha(weights);
    Some(match previous {
        Some(previous) if previous.is_finite() => alpha * median + (1.0 - alpha) * previous,
        _ => median,
    })
}

/// Sets every Region's weight (rule 7, freeze in 6b); returns how each came about.
pub(super) fn assign(
    weights: &WeightPolicy,
    frozen: bool,
    work: &mut [Work<'_>],
) -> Vec<WeightBasis> {
    let floor = weights.floor.max(1);
    let latency: BTreeMap<String, Option<f64>> = work
        .iter()
        .filter(|w| w.state.in_service)
        .map(|w| (w.name.to_owned(), w.state.smoothed_latency))
        .collect();
    let previous: BTreeMap<String, u8> = work
        .iter()
        .filter(|w| w.state.in_service && w.was_in)
        .map(|w| (w.name.to_owned(), w.state.weight))
        .collect();
    let errors: BTreeMap<String, f64> = work
        .iter()
        .filter_map(|w| Some((w.name.to_owned(), w.health.failure_ratio?)))
        .collect();
    let calcs = compute(weights, &latency, &errors, &previous);
    work.iter_mut()
        .map(|w| {
            let Some(calc) = calcs.get(w.name).filter(|_| w.state.in_service) else {
                w.state.weight = 0;
                return WeightBasis::OutOfService;
            };
            // A Region that a pin or the floor brings in has no weight to freeze: it is computed.
            if frozen && w.was_in && w.state.weight != 0 {
                w.state.weight = w.state.weight.max(floor);
                return WeightBasis::Frozen {
                    would_be: calc.weight,
                };
            }
            w.state.weight = calc.weight;
            WeightBasis::Computed(*calc)
        })
        .collect()
}

/// How a Region's weight was set in this evaluation, for its reason.
#[derive(Debug, Clone, Copy)]
pub(super) enum WeightBasis {
    OutOfService,
    /// Automation is frozen: the previous weight stands.
    Frozen {
        would_be: u8,
    },
    Computed(WeightCalc),
}

/// How one weight came about.
#[derive(Debug, Clone, Copy)]
pub(super) struct WeightCalc {
    pub(super) weight: u8,
    /// The weight before the dead band.
    pub(super) computed: u8,
    pub(super) latency: Option<f64>,
    pub(super) kept_by_dead_band: bool,
    /// The error ratio the weight was scaled down by (0 without errors).
    pub(super) error_ratio: f64,
    /// Whether any Region in service has a latency (else all get an equal share).
    pub(super) any_latency: bool,
}

fn compute(
    weights: &WeightPolicy,
    in_service_latency: &BTreeMap<String, Option<f64>>,
    error_ratio: &BTreeMap<String, f64>,
    previous: &BTreeMap<String, u8>,
) -> BTreeMap<String, WeightCalc> {
    let floor = weights.floor.max(1);
    let usable = |latency: Option<f64>| {
        latency
            .filter(|l| l.is_finite() && *l >= 0.0)
            .map(|l| l.max(MIN_LATENCY_SECONDS))
    };
    let fastest = in_service_latency
        .values()
        .filter_map(|l| usable(*l))
        .fold(None, |best: Option<f64>, l| {
            Some(best.map_or(l, |b| b.min(l)))
        });
    let best_inverse = fastest.map(|l| 1.0 / l);
    let tolerance = if weights.latency_tolerance.is_finite() {
        weights.latency_tolerance.max(0.0)
    } else {
        0.0
    };
    let raw_of = |latency: f64| match fastest {
        // Within the tolerance of the fastest counts as the fastest; beyond it, only the
        // excess counts.
        Some(fastest) => fastest / (latency - tolerance).max(fastest) * 255.0,
        None => 255.0,
    };
    let raws: Vec<f64> = in_service_latency
        .values()
        .filter_map(|l| usable(*l))
        .map(raw_of)
        .collect();
    let share = if raws.is_empty() {
        255.0
    } else {
        raws.iter().sum::<f64>() / raws.len() as f64
    };
    in_service_latency
        .iter()
        .map(|(region, latency)| {
            let latency = usable(*latency);
            let errors = error_ratio
                .get(region)
                .copied()
                .filter(|e| e.is_finite())
                .map_or(0.0, |e| e.clamp(0.0, 1.0));
            let raw = latency.map_or(share, raw_of) * (1.0 - errors);
            let computed = raw.round().clamp(f64::from(floor), 255.0) as u8;
            let before = previous.get(region).copied().unwrap_or(0);
            let ratio = if weights.dead_band_ratio.is_finite() {
                weights.dead_band_ratio.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let band = f64::from(weights.dead_band).max(f64::from(before) * ratio);
            let kept_by_dead_band =
                before != 0 && f64::from(computed.abs_diff(before)) < band && computed != before;
            let weight = if kept_by_dead_band {
                before.max(floor)
            } else {
                computed
            };
            let calc = WeightCalc {
                weight,
                computed,
                latency,
                kept_by_dead_band,
                error_ratio: errors,
                any_latency: best_inverse.is_some(),
            };
            (region.clone(), calc)
        })
        .collect()
}

fn ewma_alpha(weights: &WeightPolicy) -> f64 {
    if weights.ewma_alpha.is_nan() {
        1.0
    } else {
        weights.ewma_alpha.clamp(f64::MIN_POSITIVE, 1.0)
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}
