//! Retention: which restore points of one VM on one tier a tier's `retain`
//! rules keep. The semantics are restic's `forget`, so operators who know it
//! get no surprise:
//!
//! - points are taken newest first (a stable sort: points with the same
//!   creation time keep the order they were given in);
//! - the rules are ORed, each with its own counter: `last N` keeps the N
//!   newest points; `hourly`, `daily`, `weekly`, `monthly`, `yearly N` keep the
//!   newest point of each of the N newest periods that hold a point (a period
//!   without points does not count towards N);
//! - while a period rule still has count left when the oldest point is
//!   reached, that oldest point is kept too, even when its period already has
//!   a kept point ("oldest daily …"): a short history is kept as long as
//!   possible;
//! - `within D` keeps every point created strictly after the newest point
//!   minus D. It is measured back from the newest point, never from now, so
//!   a VM whose backups stopped keeps its last points. Whole days of D are
//!   calendar days in the time zone (the same wall-clock time D days
//!   earlier), the rest is exact time;
//! - periods are taken in the policy's time zone: a point at 00:30 local on
//!   a DST day belongs to that local day, weeks are ISO 8601 weeks (the week
//!   of 2021-01-03 is 2020-W53), and the two wall-clock 02:30s of a fall-back
//!   night are one hour.
//!
//! This module is pure: plain data in, verdicts out. The safety floors that
//! DESIGN.md §6 puts on top (never the newest good point, never a locked
//! copy, …) belong to the planner.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::policy::model::Retention;

/// A restore point as retention sees it: an identity and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointTime {
    pub id: String,
    pub created: DateTime<Utc>,
}

/// A line of a timestamp list that is not an RFC 3339 time.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: `{text}` is not an RFC 3339 time")]
pub struct TimeLineError {
    /// Counted from 1.
    pub line: usize,
    pub text: String,
    #[source]
    pub source: chrono::ParseError,
}

/// Reads a list of timestamps, one RFC 3339 time per line (blank lines
/// and `#` comments skipped), as points named by their line.
pub fn parse_times(text: &str) -> Result<Vec<PointTime>, TimeLineError> {
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let created = crate::policy::units::parse_time(line).map_err(|source| TimeLineError {
            line: n + 1,
            text: line.to_string(),
            source,
        })?;
        points.push(PointTime {
            id: line.to_string(),
            created,
        });
    }
    Ok(points)
}

/// The rule that kept a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    Within,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Within => "within",
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }
}

/// Why a point is kept: the rule, and what of it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepReason {
    pub rule: Rule,
    /// For `last`: the rule's count; for `within`: unused (0).
    pub count: u32,
    /// For a period rule: the period, e.g. `2026-11-24`, `2026-W48`.
    pub period: Option<Period>,
    /// For `within`: the rule's duration.
    pub within: Option<Duration>,
    /// Kept as the oldest point while the rule still had count left, though
    /// its period already had a kept point.
    pub oldest: bool,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oldest {
            f.write_str("oldest ")?;
        }
        match (self.rule, &self.period, self.within) {
            (Rule::Within, _, Some(d)) => write!(f, "within {}", format_duration(d)),
            (Rule::Last, _, _) => write!(f, "last {}", self.count),
            (rule, Some(p), _) => write!(f, "{} {p}", rule.name()),
            (rule, None, _) => f.write_str(rule.name()),
        }
    }
}

/// A period a rule counted: kept as numbers, named only when shown (a
/// site's plan keeps a million points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    rule: Rule,
    key: PeriodKey,
}

impl fmt::Display for Period {
    /// `2026-11-24 03:00`, `2026-11-24`, `2026-W48`, `2026-11`, `2026`;
    /// `#N` for the N-th newest point of `last`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.key;
        let day = || chrono::NaiveDate::from_yo_opt(a, b).ok_or(fmt::Error);
        match self.rule {
            Rule::Last | Rule::Within => write!(f, "#{c}"),
            Rule::Hourly => write!(
                f,
                "{}",
                day()?
                    .and_hms_opt(c, 0, 0)
                    .ok_or(fmt::Error)?
                    .format("%Y-%m-%d %H:00")
            ),
            Rule::Daily => write!(f, "{}", day()?.format("%Y-%m-%d")),
            Rule::Weekly => write!(f, "{a}-W{b:02}"),
            Rule::Monthly => write!(f, "{a}-{b:02}"),
            Rule::Yearly => write!(f, "{a}"),
        }
    }
}

/// The decision for one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Position of the point in the input slice.
    pub index: usize,
    pub id: String,
    pub created: DateTime<Utc>,
    pub keep: bool,
    /// Every rule that keeps the point, in rule order; empty when forgotten.
    pub reasons: Vec<KeepReason>,
}

impl Verdict {
    /// The reasons as one line: `daily 2026-11-24, weekly 2026-W48`.
    pub fn reasons_text(&self) -> String {
        reasons_text(&self.reasons)
    }
}

/// Reasons as one line: `daily 2026-11-24, weekly 2026-W48`.
pub fn reasons_text(reasons: &[KeepReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies `rules` to `points`, period boundaries taken in `tz`. Returns one
/// verdict per point, newest first. An empty rule set keeps nothing.
pub fn apply(points: &[PointTime], rules: &Retention, tz: Tz) -> Vec<Verdict> {
    let created: Vec<DateTime<Utc>> = points.iter().map(|p| p.created).collect();
    decide(&created, rules, tz)
        .into_iter()
        .map(|(index, reasons)| Verdict {
            index,
            id: points[index].id.clone(),
            created: points[index].created,
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

/// [`apply`] on the points' creation times alone: each point's index and
/// the reasons that keep it (none: forgotten), newest first.
pub fn decide(
    created: &[DateTime<Utc>],
    rules: &Retention,
    tz: Tz,
) -> Vec<(usize, Vec<KeepReason>)> {
    let mut order: Vec<usize> = (0..created.len()).collect();
    // Stable: equal times stay in input order, so ties are deterministic.
    order.sort_by(|&a, &b| created[b].cmp(&created[a]));

    let Some(&newest) = order.first() else {
        return Vec::new();
    };
    let within = rules
        .within
        .filter(|d| !d.is_zero())
        .map(|d| (d, within_cutoff(created[newest], d, tz)));

    let mut counters = [
        Counter::new(Rule::Last, rules.last),
        Counter::new(Rule::Hourly, rules.hourly),
        Counter::new(Rule::Daily, rules.daily),
        Counter::new(Rule::Weekly, rules.weekly),
        Counter::new(Rule::Monthly, rules.monthly),
        Counter::new(Rule::Yearly, rules.yearly),
    ];

    let last_position = order.len() - 1;
    order
        .iter()
        .enumerate()
        .map(|(position, &index)| {
            let point_created = created[index];
            let mut reasons = Vec::new();
            if let Some((d, cutoff)) = within
                && point_created > cutoff
            {
                reasons.push(KeepReason {
                    rule: Rule::Within,
                    count: 0,
                    period: None,
                    within: Some(d),
                    oldest: false,
                });
            }
            let local = point_created.with_timezone(&tz).naive_local();
            for counter in counters.iter_mut() {
                if counter.left == 0 {
                    continue;
                }
                let period = period_key(counter.rule, &local, position);
                let new_period = counter.last_period != Some(period);
                if new_period || position == last_position {
                    counter.left -= 1;
                    reasons.push(KeepReason {
                        rule: counter.rule,
                        count: counter.count,
                        period: (counter.rule != Rule::Last).then_some(Period {
                            rule: counter.rule,
                            key: period,
                        }),
                        within: None,
                        oldest: !new_period,
                    });
                    counter.last_period = Some(period);
                }
            }
            (index, reasons)
        })
        .collect()
}

/// One counted rule while the points are walked.
struct Counter {
    rule: Rule,
    count: u32,
    left: u32,
    last_period: Option<PeriodKey>,
}

impl Counter {
    fn new(rule: Rule, count: Option<u32>) -> Self {
        let count = count.unwrap_or(0);
        Counter {
            rule,
            count,
            left: count,
            last_period: None,
        }
    }
}

/// A period as a value to compare, so that the text is made only for the
/// points kept (a site walks millions of points).
type PeriodKey = (i32, u32, u32);

/// The period a local time falls in, for a rule, as [`Period`] names it.
fn period_key(rule: Rule, local: &NaiveDateTime, position: usize) -> PeriodKey {
    match rule {
        Rule::Last | Rule::Within => (0, 0, position as u32),
        Rule::Hourly => (local.year(), local.ordinal(), local.hour()),
        Rule::Daily => (local.year(), local.ordinal(), 0),
        Rule::Weekly => {
            let w = local.iso_week();
            (w.year(), w.week(), 0)
        }
        Rule::Monthly => (local.year(), local.month(), 0),
        Rule::Yearly => (local.year(), 0, 0),
    }
}

/// The instant `within` reaches back to from `newest`: whole days on the
/// calendar of `tz` (same wall-clock time), then the remainder as exact time.
fn within_cutoff(newest: DateTime<Utc>, within: Duration, tz: Tz) -> DateTime<Utc> {
    let days = within.as_secs() / 86_400;
    let rest = within - Duration::from_secs(days * 86_400);
    let local = newest.with_timezone(&tz).naive_local();
    let day_start = local
        .checked_sub_days(Days::new(days))
        .map_or(DateTime::<Utc>::MIN_UTC, |wall| from_wall_clock(tz, wall));
    chrono::TimeDelta::from_std(rest)
        .ok()
        .and_then(|r| day_start.checked_sub_signed(r))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A wall-clock time in `tz` as an instant. A time the fall-back hour
/// repeats is its first occurrence (the longer reach, so the rule keeps
/// more); a time in the spring-forward gap is read with the offset in force
/// before the gap (02:30 becomes 03:30 summer time).
fn from_wall_clock(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            let before = wall - chrono::TimeDelta::hours(24);
            let offset = tz.offset_from_utc_datetime(&before);
            let seconds = chrono::Offset::fix(&offset).local_minus_utc();
            (wall - chrono::TimeDelta::seconds(i64::from(seconds))).and_utc()
        }
    }
}

/// `7d`, `13d23h`, `90m`: the largest units that divide evenly.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
