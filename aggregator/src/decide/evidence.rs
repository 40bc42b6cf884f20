//! What a correlated failure's alert can say about its cause, from how each kind of target
//! failed. When every Region of a service fails its deep check (`/status/deep`: the Lambda,
//! Aurora and DynamoDB behind it) the same way while its shallow `/status` answers, the
//! likeliest cause is a dependency every Region shares (an Aurora global database's writer, a
//! DynamoDB table's home Region); taking Regions out would move traffic onto Regions with the
//! same failure. When the shallow checks fail everywhere too, the path from the vantages (or a
//! front door every Region shares) is the likelier cause. Pure: the caller gathers the totals.

use crate::model::KindTotals;
use vantage_protocol::Outcome;

/// One Region of a correlated failure: its name and how its shallow and deep checks fared.
#[derive(Debug, Clone)]
pub struct RegionChecks {
    pub region: String,
    pub shallow: KindTotals,
    pub deep: KindTotals,
}

/// The sentence the correlated-failure alert adds, if the checks point at a cause; `None` when
/// they do not (some Region's deep check passes, or no Region has one).
pub fn correlated_cause(regions: &[RegionChecks], max_failure_ratio: f64) -> Option<String> {
    let failing = |t: &KindTotals| t.attempts > 0 && ratio(t) > max_failure_ratio;
    if regions.is_empty() {
        return None;
    }
    let list = |of: &dyn Fn(&RegionChecks) -> &KindTotals| -> String {
        regions
            .iter()
            .map(|r| format!("{} {:.0} %", r.region, ratio(of(r)) * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if regions.iter().all(|r| failing(&r.deep)) && regions.iter().all(|r| !failing(&r.shallow)) {
        let same = common_outcome(regions.iter().map(|r| &r.deep))
            .map(|o| format!(", every one with {}", o.as_str()))
            .unwrap_or_default();
        return Some(format!(
            "the deep checks fail in every one of these Regions ({}{same}) while their shallow \
             /status answers: a dependency they all share (a database writer, a global \
             table's home Region) is the likeliest cause, and taking Regions out would not help",
            list(&|r| &r.deep)
        ));
    }
    if regions.iter().all(|r| failing(&r.shallow)) {
        let same = common_outcome(regions.iter().map(|r| &r.shallow))
            .map(|o| format!(", every one with {}", o.as_str()))
            .unwrap_or_default();
        return Some(format!(
            "even the shallow /status fails in every one of these Regions ({}{same}): the \
             path from the vantages, or a front door every Region shares, is the likelier \
             cause than the Regions themselves",
            list(&|r| &r.shallow)
        ));
    }
    None
}

fn ratio(t: &KindTotals) -> f64 {
    if t.attempts == 0 {
        0.0
    } else {
        t.failures.min(t.attempts) as f64 / t.attempts as f64
    }
}

/// The failure outcome that is the most common in every one of `totals`, if they share one.
fn common_outcome<'a>(totals: impl Iterator<Item = &'a KindTotals>) -> Option<Outcome> {
    let mut common = None;
    for t in totals {
        let top = t
            .failed
            .iter()
            .max_by_key(|(o, n)| (**n, std::cmp::Reverse(**o)))
            .map(|(o, _)| *o)?;
        match common {
            None => common = Some(top),
            Some(c) if c == top => {}
            Some(_) => return None,
        }
    }
    common
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(attempts: u64, failures: u64, outcome: Outcome) -> KindTotals {
        KindTotals {
            attempts,
            failures,
            failed: if failures > 0 {
                [(outcome, failures)].into()
            } else {
                Default::default()
            },
        }
    }

    fn region(name: &str, shallow: KindTotals, deep: KindTotals) -> RegionChecks {
        RegionChecks {
            region: name.to_owned(),
            shallow,
            deep,
        }
    }

    #[test]
    fn deep_checks_failing_everywhere_the_same_way_point_at_a_shared_dependency() {
        let ok = totals(60, 0, Outcome::Ok);
        let regions = [
            region("eu-west-1", ok.clone(), totals(60, 60, Outcome::HttpStatus)),
            region("us-east-1", ok, totals(60, 58, Outcome::HttpStatus)),
        ];
        let text = correlated_cause(&regions, 0.5).unwrap();
        assert!(text.contains("deep checks fail in every one"), "{text}");
        assert!(text.contains("every one with http_status"), "{text}");
        assert!(text.contains("eu-west-1 100 %, us-east-1 97 %"), "{text}");
        assert!(text.contains("taking Regions out would not help"), "{text}");
    }

    #[test]
    fn one_region_whose_deep_check_passes_is_no_shared_dependency() {
        let ok = totals(60, 0, Outcome::Ok);
        let regions = [
            region("eu-west-1", ok.clone(), totals(60, 60, Outcome::HttpStatus)),
            region("us-east-1", ok.clone(), ok),
        ];
        assert_eq!(correlated_cause(&regions, 0.5), None);
    }

    #[test]
    fn shallow_checks_failing_everywhere_point_at_the_path() {
        let regions = [
            region(
                "eu-west-1",
                totals(60, 60, Outcome::Timeout),
                totals(0, 0, Outcome::Ok),
            ),
            region(
                "us-east-1",
                totals(60, 50, Outcome::Connect),
                totals(0, 0, Outcome::Ok),
            ),
        ];
        let text = correlated_cause(&regions, 0.5).unwrap();
        assert!(text.contains("even the shallow /status fails"), "{text}");
        assert!(
            !text.contains("every one with"),
            "different outcomes: {text}"
        );
    }
}
