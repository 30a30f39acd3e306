//! Schedules: a cron expression evaluated in a time zone, DST-correct.
//!
//! Evaluation is croner's, chosen because it follows Vixie cron and the Open
//! Cron Pattern Specification across DST changes: a fixed-time job that falls
//! into the spring-forward gap runs once, right after the gap, and one that
//! falls into the repeated fall-back hour runs once, at its first occurrence.
//! The `cron` crate instead skips the gap and fires twice in the repeated
//! hour — a backup that silently does not run, or runs twice, on two nights a
//! year. The tests below pin this down for Europe/Berlin and America/New_York.
//!
//! A schedule is part of the resolved policy (`model::Policy::schedule`),
//! so it lives here and the planner reads it through the model; it depends
//! on nothing else in coffer and must never read the clock: `now` is always
//! an argument.

use chrono::{DateTime, Duration as ChronoDuration, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule: when a policy's backups are due.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub text: String,
    pub tz: Tz,
    cron: Cron,
}

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("invalid cron expression: {0}")]
    Invalid(String),
    #[error("the schedule never fires")]
    NeverFires,
}

/// One fire time with what a reader needs to trust it around DST changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireTime {
    pub at: DateTime<Utc>,
    pub local: DateTime<Tz>,
    /// Set when the UTC offset changed since the previous fire time (or since
    /// the start of the listing): the DST transition that lies between.
    pub offset_change: Option<(String, String)>,
}

impl Schedule {
    pub fn parse(text: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(text)
            .map_err(|e| ScheduleError::Invalid(e.to_string()))?;
        let schedule = Schedule {
            text: text.to_string(),
            tz,
            cron,
        };
        // A pattern such as `0 0 30 2 *` parses but never matches a date. Ask
        // for one fire time from a fixed instant; croner gives up after a
        // bounded search, which is what "never" means here.
        let probe = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        if schedule.next_after(probe).is_none() {
            return Err(ScheduleError::NeverFires);
        }
        Ok(schedule)
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire time at or before `at`.
    pub fn last_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fire times after `after`, each marked when a DST change
    /// lies between it and the one before.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<FireTime> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = after;
        let mut previous_offset = self.tz.offset_from_utc_datetime(&after.naive_utc()).fix();
        while out.len() < n {
            let Some(at) = self.next_after(cursor) else {
                break;
            };
            let local = at.with_timezone(&self.tz);
            let offset = local.offset().fix();
            let offset_change = (offset != previous_offset)
                .then(|| (previous_offset.to_string(), offset.to_string()));
            out.push(FireTime {
                at,
                local,
                offset_change,
            });
            previous_offset = offset;
            cursor = at;
        }
        out
    }

    /// The longest gap between two consecutive fire times over the year after
    /// `from` (bounded work): what the RPO must at least allow.
    pub fn longest_gap(&self, from: DateTime<Utc>) -> Option<ChronoDuration> {
        let horizon = from + ChronoDuration::days(366);
        let mut longest = ChronoDuration::zero();
        let mut previous = self.next_after(from)?;
        for _ in 0..20_000 {
            let Some(next) = self.next_after(previous) else {
                break;
            };
            longest = longest.max(next - previous);
            if next > horizon {
                break;
            }
            previous = next;
        }
        Some(longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn fires_on_local_day(s: &Schedule, day: chrono::NaiveDate) -> Vec<DateTime<Tz>> {
        s.upcoming(utc(2026, 1, 1, 0, 0), 400)
            .into_iter()
            .map(|f| f.local)
            .filter(|l| l.date_naive() == day)
            .collect()
    }

    #[test]
    fn daily_0230_berlin_fires_once_on_spring_forward_day_right_after_the_gap() {
        let s = Schedule::parse("0 30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let fires = fires_on_local_day(&s, day);
        assert_eq!(fires.len(), 1, "{fires:?}");
        // 02:30 does not exist that night; the job runs when the clock reads 03:00 CEST.
        assert_eq!(fires[0].to_rfc3339(), "2026-03-29T03:00:00+02:00");
    }

    #[test]
    fn daily_0230_berlin_fires_once_on_fall_back_day_at_first_occurrence() {
        let s = Schedule::parse("0 30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        let fires = fires_on_local_day(&s, day);
        assert_eq!(fires.len(), 1, "{fires:?}");
        assert_eq!(fires[0].to_rfc3339(), "2026-10-25T02:30:00+02:00");
    }

    #[test]
    fn new_york_transitions_fire_once() {
        let s = Schedule::parse("30 1 * * *", chrono_tz::America::New_York).unwrap();
        for (m, d) in [(3, 8), (11, 1)] {
            let day = chrono::NaiveDate::from_ymd_opt(2026, m, d).unwrap();
            assert_eq!(fires_on_local_day(&s, day).len(), 1);
        }
        let s = Schedule::parse("30 2 * * *", chrono_tz::America::New_York).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        assert_eq!(fires_on_local_day(&s, day).len(), 1);
    }

    #[test]
    fn every_year_of_daily_fires_has_one_per_day() {
        let s = Schedule::parse("0 30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        let fires = s.upcoming(utc(2025, 12, 31, 23, 0), 365);
        let mut days: Vec<_> = fires.iter().map(|f| f.local.date_naive()).collect();
        days.dedup();
        assert_eq!(days.len(), 365);
        let marked: Vec<_> = fires.iter().filter(|f| f.offset_change.is_some()).collect();
        assert_eq!(marked.len(), 2, "two DST changes in 2026");
    }

    #[test]
    fn hourly_schedule_skips_the_missing_hour_and_keeps_real_time_order() {
        let s = Schedule::parse("0 * * * *", chrono_tz::Europe::Berlin).unwrap();
        let fires = s.upcoming(utc(2026, 10, 24, 22, 0), 6);
        for pair in fires.windows(2) {
            assert!(pair[1].at > pair[0].at);
            assert_eq!(pair[1].at - pair[0].at, ChronoDuration::hours(1));
        }
    }

    #[test]
    fn impossible_dates_never_fire_and_garbage_is_invalid() {
        assert_eq!(
            Schedule::parse("0 0 30 2 *", chrono_tz::UTC).unwrap_err(),
            ScheduleError::NeverFires
        );
        assert!(matches!(
            Schedule::parse("every night", chrono_tz::UTC),
            Err(ScheduleError::Invalid(_))
        ));
        assert!(matches!(
            Schedule::parse("0 61 * * *", chrono_tz::UTC),
            Err(ScheduleError::Invalid(_))
        ));
    }

    #[test]
    fn longest_gap_of_a_weekday_schedule_spans_the_weekend() {
        let s = Schedule::parse("0 22 * * MON-FRI", chrono_tz::UTC).unwrap();
        assert_eq!(
            s.longest_gap(utc(2026, 1, 1, 0, 0)).unwrap(),
            ChronoDuration::days(3)
        );
    }
}
