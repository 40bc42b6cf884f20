//! Scheduled maintenance windows (`[[maintenance]]`): from `start` (RFC 3339) for `duration`,
//! the listed Regions of the listed services (every service when none are listed) are held out
//! of service by the aggregator as a pin `down` would, and released to the normal rules when
//! the window ends. Also the RFC 3339 reader the override API's `until` uses, so both read
//! instants one way.

use super::{ConfigError, DurationText, FleetConfig, Located, Problem};
use serde::Deserialize;
use std::collections::BTreeSet;

/// One `[[maintenance]]` window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSection {
    /// When it starts, RFC 3339 (`2026-12-03T01:00:00Z`, or with an offset).
    pub start: Located<String>,
    /// How long it lasts.
    pub duration: DurationText,
    /// The Regions held out.
    pub regions: Vec<Located<String>>,
    /// The services whose Regions are held out (default: every service there).
    #[serde(default)]
    pub services: Vec<Located<String>>,
    /// Why, for the decision log, notifications and `/v1/state`.
    pub reason: Option<String>,
}

impl MaintenanceSection {
    /// Start in Unix milliseconds (validated when the file loads).
    pub fn start_ms(&self) -> u64 {
        parse_rfc3339_ms(self.start.get_ref()).unwrap_or(0)
    }

    pub fn end_ms(&self) -> u64 {
        self.start_ms()
            .saturating_add(u64::try_from(self.duration.0.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) as Unix milliseconds;
/// `None` if malformed or before 1970.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &s[r];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > days_in[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        ms = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            if rest.as_bytes()[3] != b':' {
                return None;
            }
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if rest.starts_with('-') {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-12-03T02:00:00.000Z`).
pub fn format_rfc3339_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days (Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

impl FleetConfig {
    /// Every window: a valid start, a duration of at least a second, known Regions and
    /// services, each Region run by one of the listed services.
    pub(super) fn validate_maintenance(&self) -> Result<(), ConfigError> {
        let services = self.services();
        for (i, m) in self.maintenance.iter().enumerate() {
            let key = |k: &str| format!("maintenance[{i}].{k}");
            if parse_rfc3339_ms(m.start.get_ref()).is_none() {
                return Err(self.place(Problem::at(
                    &m.start,
                    key("start"),
                    "use RFC 3339 UTC or with an offset, e.g. \"2026-12-03T01:00:00Z\"",
                )));
            }
            if m.duration.0.as_secs() < 1 {
                return Err(self.place(Problem::key(key("duration"), "must be at least 1s")));
            }
            let mut chosen = Vec::new();
            for s in &m.services {
                match services.iter().find(|v| &v.name == s.get_ref()) {
                    Some(v) => chosen.push(v),
                    None => {
                        let names: Vec<&str> = services.iter().map(|v| v.name.as_str()).collect();
                        return Err(self.place(Problem::at(
                            s,
                            key("services"),
                            format!("unknown service {:?}; the fleet has {names:?}", s.get_ref()),
                        )));
                    }
                }
            }
            if m.services.is_empty() {
                chosen = services.iter().collect();
            }
            if m.regions.is_empty() {
                return Err(self.place(Problem::at(
                    &m.start,
                    key("regions"),
                    "missing: list the Regions held out, e.g. regions = [\"eu-west-1\"]",
                )));
            }
            for r in &m.regions {
                if !chosen.iter().any(|s| {
                    s.fleet
                        .regions
                        .iter()
                        .any(|x| x.name.get_ref() == r.get_ref())
                }) {
                    let known: BTreeSet<&str> = chosen
                        .iter()
                        .flat_map(|s| s.fleet.regions.iter().map(|x| x.name.get_ref().as_str()))
                        .collect();
                    return Err(self.place(Problem::at(
                        r,
                        key("regions"),
                        format!(
                            "{:?} is not a Region of these services; they have {known:?}",
                            r.get_ref()
                        ),
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_reads_utc_offsets_and_fractions_and_refuses_nonsense() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-12-03T02:00:00Z"),
            Some(1_796_263_200_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-03T03:00:00.250+01:00"),
            Some(1_796_263_200_250)
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-12-03T02:00:00",
            "2026-12-03",
            "x",
            "2026-12-03T24:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(
            format_rfc3339_ms(1_796_263_200_250),
            "2026-12-03T02:00:00.250Z"
        );
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_is_the_identity(ms in 0u64..253_402_300_799_000) {
            proptest::prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
    }
}
