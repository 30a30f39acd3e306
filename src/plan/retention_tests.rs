//! Retention against restic's own expectations (the input timestamps of its
//! policy tests and the kept sets of its golden files), then the time-zone
//! and ISO-week edges coffer cares about, then invariants by proptest.

use super::*;
use proptest::prelude::*;

fn utc(s: &str) -> DateTime<Utc> {
    let fmt = if s.contains('.') {
        "%Y-%m-%d %H:%M:%S%.f"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    NaiveDateTime::parse_from_str(s, fmt)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .and_utc()
}

fn points(times: &[&str]) -> Vec<PointTime> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| PointTime {
            id: format!("p{i}"),
            created: utc(t),
        })
        .collect()
}

#[test]
fn a_timestamp_list_skips_blanks_and_comments_and_names_a_bad_line() {
    let text = "# points\n2026-11-25T01:00:00Z\n\n  2026-11-26T03:00:00+02:00  \n";
    let points = parse_times(text).unwrap();
    let ids: Vec<&str> = points.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["2026-11-25T01:00:00Z", "2026-11-26T03:00:00+02:00"]);
    assert_eq!(points[1].created, utc("2026-11-26 01:00:00"));
    let e = parse_times("2026-11-25T01:00:00Z\nmonday\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert_eq!(e.to_string(), "line 2: `monday` is not an RFC 3339 time");
}

fn kept(verdicts: &[Verdict]) -> Vec<String> {
    verdicts
        .iter()
        .filter(|v| v.keep)
        .map(|v| v.created.format("%Y-%m-%d %H:%M:%S%.f").to_string())
        .collect()
}

fn reasons(verdicts: &[Verdict]) -> Vec<String> {
    verdicts
        .iter()
        .filter(|v| v.keep)
        .map(Verdict::reasons_text)
        .collect()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// The snapshot times of restic's policy test, in its (unsorted) order;
/// five of them share 2015-10-22 10:20:30.
const RESTIC_TIMES: &[&str] = &[
    "2014-09-01 10:20:30",
    "2014-09-02 10:20:30",
    "2014-09-05 10:20:30",
    "2014-09-06 10:20:30",
    "2014-09-08 10:20:30",
    "2014-09-09 10:20:30",
    "2014-09-10 10:20:30",
    "2014-09-11 10:20:30",
    "2014-09-20 10:20:30",
    "2014-09-22 10:20:30",
    "2014-08-08 10:20:30",
    "2014-08-10 10:20:30",
    "2014-08-12 10:20:30",
    "2014-08-13 10:20:30",
    "2014-08-13 10:20:30.1",
    "2014-08-15 10:20:30",
    "2014-08-18 10:20:30",
    "2014-08-20 10:20:30",
    "2014-08-21 10:20:30",
    "2014-08-22 10:20:30",
    "2014-10-01 10:20:30",
    "2014-10-02 10:20:30",
    "2014-10-05 10:20:30",
    "2014-10-06 10:20:30",
    "2014-10-08 10:20:30",
    "2014-10-09 10:20:30",
    "2014-10-10 10:20:30",
    "2014-10-11 10:20:30",
    "2014-10-20 10:20:30",
    "2014-10-22 10:20:30",
    "2014-11-08 10:20:30",
    "2014-11-10 10:20:30",
    "2014-11-12 10:20:30",
    "2014-11-13 10:20:30",
    "2014-11-13 10:20:30.1",
    "2014-11-15 10:20:30",
    "2014-11-18 10:20:30",
    "2014-11-20 10:20:30",
    "2014-11-21 10:20:30",
    "2014-11-22 10:20:30",
    "2015-09-01 10:20:30",
    "2015-09-02 10:20:30",
    "2015-09-05 10:20:30",
    "2015-09-06 10:20:30",
    "2015-09-08 10:20:30",
    "2015-09-09 10:20:30",
    "2015-09-10 10:20:30",
    "2015-09-11 10:20:30",
    "2015-09-20 10:20:30",
    "2015-09-22 10:20:30",
    "2015-08-08 10:20:30",
    "2015-08-10 10:20:30",
    "2015-08-12 10:20:30",
    "2015-08-13 10:20:30",
    "2015-08-13 10:20:30.1",
    "2015-08-15 10:20:30",
    "2015-08-18 10:20:30",
    "2015-08-20 10:20:30",
    "2015-08-21 10:20:30",
    "2015-08-22 10:20:30",
    "2015-10-01 10:20:30",
    "2015-10-02 10:20:30",
    "2015-10-05 10:20:30",
    "2015-10-06 10:20:30",
    "2015-10-08 10:20:30",
    "2015-10-09 10:20:30",
    "2015-10-10 10:20:30",
    "2015-10-11 10:20:30",
    "2015-10-20 10:20:30",
    "2015-10-22 10:20:30",
    "2015-10-22 10:20:30",
    "2015-10-22 10:20:30",
    "2015-10-22 10:20:30",
    "2015-10-22 10:20:30",
    "2015-11-08 10:20:30",
    "2015-11-10 10:20:30",
    "2015-11-12 10:20:30",
    "2015-11-13 10:20:30",
    "2015-11-13 10:20:30.1",
    "2015-11-15 10:20:30",
    "2015-11-18 10:20:30",
    "2015-11-20 10:20:30",
    "2015-11-21 10:20:30",
    "2015-11-22 10:20:30",
    "2016-01-01 01:02:03",
    "2016-01-01 01:03:03",
    "2016-01-01 07:08:03",
    "2016-01-03 07:02:03",
    "2016-01-04 10:23:03",
    "2016-01-04 11:23:03",
    "2016-01-04 12:23:03",
    "2016-01-04 12:24:03",
    "2016-01-04 12:28:03",
    "2016-01-04 12:30:03",
    "2016-01-04 16:23:03",
    "2016-01-05 09:02:03",
    "2016-01-06 08:02:03",
    "2016-01-07 10:02:03",
    "2016-01-08 20:02:03",
    "2016-01-09 21:02:03",
    "2016-01-12 21:02:03",
    "2016-01-12 21:08:03",
    "2016-01-18 12:02:03",
];

fn restic(rules: Retention) -> Vec<Verdict> {
    apply(&points(RESTIC_TIMES), &rules, Tz::UTC)
}

/// The fractional second of restic's `10:20:30.1` prints as `.100`.
fn t(s: &str) -> String {
    utc(s).format("%Y-%m-%d %H:%M:%S%.f").to_string()
}

fn ts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| t(s)).collect()
}

#[test]
fn restic_every_point_gets_a_verdict_newest_first() {
    let v = restic(Retention {
        daily: Some(3),
        ..Default::default()
    });
    assert_eq!(v.len(), RESTIC_TIMES.len());
    assert!(v.windows(2).all(|w| w[0].created >= w[1].created));
    assert!(v.iter().filter(|v| !v.keep).all(|v| v.reasons.is_empty()));
}

#[test]
fn restic_no_rules_keeps_nothing() {
    assert!(kept(&restic(Retention::default())).is_empty());
}

#[test]
fn restic_last_10() {
    let v = restic(Retention {
        last: Some(10),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2016-01-12 21:08:03",
            "2016-01-12 21:02:03",
            "2016-01-09 21:02:03",
            "2016-01-08 20:02:03",
            "2016-01-07 10:02:03",
            "2016-01-06 08:02:03",
            "2016-01-05 09:02:03",
            "2016-01-04 16:23:03",
            "2016-01-04 12:30:03",
        ])
    );
    assert!(reasons(&v).iter().all(|r| r == "last 10"));
}

#[test]
fn restic_last_more_than_there_are_keeps_all() {
    let v = restic(Retention {
        last: Some(200),
        ..Default::default()
    });
    assert_eq!(kept(&v).len(), RESTIC_TIMES.len());
}

/// policy_keep_snapshots_5: `hourly 20`.
#[test]
fn restic_hourly_20() {
    let v = restic(Retention {
        hourly: Some(20),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2016-01-12 21:08:03",
            "2016-01-09 21:02:03",
            "2016-01-08 20:02:03",
            "2016-01-07 10:02:03",
            "2016-01-06 08:02:03",
            "2016-01-05 09:02:03",
            "2016-01-04 16:23:03",
            "2016-01-04 12:30:03",
            "2016-01-04 11:23:03",
            "2016-01-04 10:23:03",
            "2016-01-03 07:02:03",
            "2016-01-01 07:08:03",
            "2016-01-01 01:03:03",
            "2015-11-22 10:20:30",
            "2015-11-21 10:20:30",
            "2015-11-20 10:20:30",
            "2015-11-18 10:20:30",
            "2015-11-15 10:20:30",
            "2015-11-13 10:20:30.1",
        ])
    );
    assert_eq!(reasons(&v)[0], "hourly 2016-01-18 12:00");
}

/// policy_keep_snapshots_7: `daily 10`.
#[test]
fn restic_daily_10() {
    let v = restic(Retention {
        daily: Some(10),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2016-01-12 21:08:03",
            "2016-01-09 21:02:03",
            "2016-01-08 20:02:03",
            "2016-01-07 10:02:03",
            "2016-01-06 08:02:03",
            "2016-01-05 09:02:03",
            "2016-01-04 16:23:03",
            "2016-01-03 07:02:03",
            "2016-01-01 07:08:03",
        ])
    );
    assert_eq!(reasons(&v)[1], "daily 2016-01-12");
}

/// policy_keep_snapshots_8: `daily 30` reaches back over the gap between
/// 2015-11-22 and 2016-01-01: days without points do not count.
#[test]
fn restic_daily_30() {
    let v = restic(Retention {
        daily: Some(30),
        ..Default::default()
    });
    let k = kept(&v);
    assert_eq!(k.len(), 30);
    assert_eq!(k[10], t("2015-11-22 10:20:30"));
    assert_eq!(k[15], t("2015-11-13 10:20:30.1"));
    assert_eq!(k[19], t("2015-10-22 10:20:30"));
    assert_eq!(k[29], t("2015-09-22 10:20:30"));
}

/// policy_keep_snapshots_14: `monthly 6`; the kept 2015-10-22 point is the
/// first of the five that share its time (restic sorts stably).
#[test]
fn restic_monthly_6_ties_keep_input_order() {
    let v = restic(Retention {
        monthly: Some(6),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2015-11-22 10:20:30",
            "2015-10-22 10:20:30",
            "2015-09-22 10:20:30",
            "2015-08-22 10:20:30",
            "2014-11-22 10:20:30",
        ])
    );
    let tie = v
        .iter()
        .find(|v| v.keep && v.created == utc("2015-10-22 10:20:30"))
        .unwrap();
    assert_eq!(tie.id, "p69");
    assert_eq!(tie.reasons_text(), "monthly 2015-10");
}

/// policy_keep_snapshots_15: `daily 2, weekly 2, monthly 6`, rules ORed.
#[test]
fn restic_daily_weekly_monthly() {
    let v = restic(Retention {
        daily: Some(2),
        weekly: Some(2),
        monthly: Some(6),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2016-01-12 21:08:03",
            "2015-11-22 10:20:30",
            "2015-10-22 10:20:30",
            "2015-09-22 10:20:30",
            "2015-08-22 10:20:30",
            "2014-11-22 10:20:30",
        ])
    );
    assert_eq!(
        reasons(&v)[..2],
        [
            "daily 2016-01-18, weekly 2016-W03, monthly 2016-01",
            "daily 2016-01-12, weekly 2016-W02",
        ]
    );
}

/// policy_keep_snapshots_16: `yearly 10` with three years of points keeps
/// the newest of each year and, since count is left, the oldest point.
#[test]
fn restic_yearly_10_keeps_the_oldest() {
    let v = restic(Retention {
        yearly: Some(10),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2015-11-22 10:20:30",
            "2014-11-22 10:20:30",
            "2014-08-08 10:20:30",
        ])
    );
    assert_eq!(reasons(&v)[3], "oldest yearly 2014");
}

/// policy_keep_snapshots_21 and _23: `within` counts back from the newest
/// point (2016-01-18), not from now.
#[test]
fn restic_within_days() {
    let v = restic(Retention {
        within: Some(days(1)),
        ..Default::default()
    });
    assert_eq!(kept(&v), ts(&["2016-01-18 12:02:03"]));
    let v = restic(Retention {
        within: Some(days(7)),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2016-01-12 21:08:03",
            "2016-01-12 21:02:03",
        ])
    );
    assert!(reasons(&v).iter().all(|r| r == "within 7d"));
}

/// policy_keep_snapshots_27: `within 13d23h` reaches 2016-01-04 13:02:03.
#[test]
fn restic_within_days_and_hours() {
    let v = restic(Retention {
        within: Some(days(13) + Duration::from_secs(23 * 3600)),
        ..Default::default()
    });
    assert_eq!(
        kept(&v),
        ts(&[
            "2016-01-18 12:02:03",
            "2016-01-12 21:08:03",
            "2016-01-12 21:02:03",
            "2016-01-09 21:02:03",
            "2016-01-08 20:02:03",
            "2016-01-07 10:02:03",
            "2016-01-06 08:02:03",
            "2016-01-05 09:02:03",
            "2016-01-04 16:23:03",
        ])
    );
    assert_eq!(reasons(&v)[0], "within 13d23h");
}

#[test]
fn empty_input_gives_no_verdicts() {
    assert!(
        apply(
            &[],
            &Retention {
                last: Some(3),
                ..Default::default()
            },
            Tz::UTC
        )
        .is_empty()
    );
}

/// A point at 00:30 local on the day DST starts belongs to that local day
/// (in UTC it is still the day before).
#[test]
fn daily_buckets_follow_the_policy_time_zone_across_dst() {
    // 2026-03-29: Europe/Berlin springs forward at 02:00.
    let p = points(&[
        "2026-03-29 10:00:00", // 12:00 CEST, 29th
        "2026-03-28 23:30:00", // 00:30 CET, 29th local
        "2026-03-28 20:00:00", // 21:00 CET, 28th
        "2026-03-27 20:00:00",
    ]);
    let rules = Retention {
        daily: Some(2),
        ..Default::default()
    };
    let berlin = apply(&p, &rules, chrono_tz::Europe::Berlin);
    assert_eq!(
        kept(&berlin),
        ts(&["2026-03-29 10:00:00", "2026-03-28 20:00:00"])
    );
    assert_eq!(reasons(&berlin), ["daily 2026-03-29", "daily 2026-03-28"]);
    // In UTC the 23:30 point is the newest of the 28th.
    let in_utc = apply(&p, &rules, Tz::UTC);
    assert_eq!(
        kept(&in_utc),
        ts(&["2026-03-29 10:00:00", "2026-03-28 23:30:00"])
    );
}

/// On a fall-back night the wall-clock hour 02:00–03:00 happens twice; like
/// restic, periods are wall-clock periods, so both are one hour.
#[test]
fn hourly_buckets_merge_the_repeated_fall_back_hour() {
    // 2026-10-25: Europe/Berlin falls back at 03:00 CEST to 02:00 CET.
    let p = points(&[
        "2026-10-25 01:30:00", // 02:30 CET (second)
        "2026-10-25 00:30:00", // 02:30 CEST (first)
        "2026-10-24 23:30:00", // 01:30 CEST
    ]);
    let v = apply(
        &p,
        &Retention {
            hourly: Some(2),
            ..Default::default()
        },
        chrono_tz::Europe::Berlin,
    );
    assert_eq!(
        kept(&v),
        ts(&["2026-10-25 01:30:00", "2026-10-24 23:30:00"])
    );
    assert_eq!(
        reasons(&v),
        ["hourly 2026-10-25 02:00", "hourly 2026-10-25 01:00"]
    );
}

/// `within 1d` over a spring-forward day reaches back to the same
/// wall-clock time the day before (23 real hours), as restic's calendar
/// arithmetic does.
#[test]
fn within_whole_days_are_calendar_days() {
    let p = points(&[
        "2026-03-29 10:00:00", // 12:00 CEST
        "2026-03-28 10:30:00", // 11:30 CET: 23.5 h earlier, but before 12:00 CET
        "2026-03-28 11:30:00", // 12:30 CET
    ]);
    let v = apply(
        &p,
        &Retention {
            within: Some(days(1)),
            ..Default::default()
        },
        chrono_tz::Europe::Berlin,
    );
    assert_eq!(
        kept(&v),
        ts(&["2026-03-29 10:00:00", "2026-03-28 11:30:00"])
    );
}

/// When `within`'s whole days land in the spring-forward gap (02:30 does
/// not exist on 2026-03-29 in Berlin), the wall-clock time is read with the
/// offset before the gap: the reach ends at 03:30 CEST.
#[test]
fn within_landing_in_the_dst_gap() {
    let p = points(&[
        "2026-03-30 00:30:00", // 02:30 CEST on the 30th
        "2026-03-29 01:45:00", // 03:45 CEST: kept
        "2026-03-29 01:15:00", // 03:15 CEST: before the reach
    ]);
    let v = apply(
        &p,
        &Retention {
            within: Some(days(1)),
            ..Default::default()
        },
        chrono_tz::Europe::Berlin,
    );
    assert_eq!(
        kept(&v),
        ts(&["2026-03-30 00:30:00", "2026-03-29 01:45:00"])
    );
}

#[test]
fn iso_weeks_across_year_ends() {
    // 2020 has 53 ISO weeks: 2020-12-28 and 2021-01-03 are 2020-W53, the
    // 4th of January 2021 opens 2021-W01.
    let p = points(&[
        "2021-01-04 12:00:00",
        "2021-01-03 12:00:00",
        "2020-12-28 12:00:00",
        "2020-12-27 12:00:00", // 2020-W52
    ]);
    let v = apply(
        &p,
        &Retention {
            weekly: Some(3),
            ..Default::default()
        },
        Tz::UTC,
    );
    assert_eq!(
        kept(&v),
        ts(&[
            "2021-01-04 12:00:00",
            "2021-01-03 12:00:00",
            "2020-12-27 12:00:00"
        ])
    );
    assert_eq!(
        reasons(&v),
        ["weekly 2021-W01", "weekly 2020-W53", "weekly 2020-W52"]
    );

    // 2022-01-01 (a Saturday) is still 2021-W52; 2024-12-30 (a Monday)
    // already 2025-W01.
    let p = points(&[
        "2025-01-05 12:00:00",
        "2024-12-30 12:00:00",
        "2022-01-02 12:00:00",
        "2022-01-01 12:00:00",
        "2021-12-27 12:00:00",
    ]);
    let v = apply(
        &p,
        &Retention {
            weekly: Some(2),
            ..Default::default()
        },
        Tz::UTC,
    );
    assert_eq!(
        kept(&v),
        ts(&["2025-01-05 12:00:00", "2022-01-02 12:00:00"])
    );
    assert_eq!(reasons(&v), ["weekly 2025-W01", "weekly 2021-W52"]);
}

/// A Sunday 23:30 in New York is already Monday in UTC: the ISO week is
/// taken in the policy's zone.
#[test]
fn iso_week_boundary_in_the_policy_time_zone() {
    let p = points(&["2026-01-05 04:30:00", "2026-01-04 12:00:00"]);
    let rules = Retention {
        weekly: Some(1),
        ..Default::default()
    };
    let ny = apply(&p, &rules, chrono_tz::America::New_York);
    assert_eq!(reasons(&ny)[0], "weekly 2026-W01");
    assert_eq!(kept(&ny), ts(&["2026-01-05 04:30:00"]));
    let v = apply(&p, &rules, Tz::UTC);
    assert_eq!(reasons(&v)[0], "weekly 2026-W02");
    // Weekly 1 with count used up: the older point is forgotten in UTC…
    assert_eq!(kept(&v), ts(&["2026-01-05 04:30:00"]));
    // …and in New York both are in 2026-W01, so only the newest is kept.
    assert!(!ny[1].keep);
}

#[test]
fn reasons_are_readable() {
    let r = KeepReason {
        rule: Rule::Within,
        count: 0,
        period: None,
        within: Some(Duration::from_secs(90 * 60)),
        oldest: false,
    };
    assert_eq!(r.to_string(), "within 1h30m");
    assert_eq!(format_duration(days(14)), "14d");
}

fn arb_rules() -> impl Strategy<Value = Retention> {
    let count = proptest::option::of(0u32..6);
    (
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count,
        proptest::option::of(0u64..(40 * 86_400)),
    )
        .prop_map(
            |(last, hourly, daily, weekly, monthly, yearly, within)| Retention {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
                within: within.map(Duration::from_secs),
            },
        )
}

fn arb_tz() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        Tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kolkata,
    ])
}

fn arb_points() -> impl Strategy<Value = Vec<PointTime>> {
    // Up to three years from 2024, at minute resolution, with duplicates.
    prop::collection::vec(0i64..(3 * 365 * 24 * 60), 0..40).prop_map(|minutes| {
        let base = utc("2024-01-01 00:00:00");
        minutes
            .into_iter()
            .enumerate()
            .map(|(i, m)| PointTime {
                id: format!("p{i}"),
                created: base + chrono::TimeDelta::minutes(m),
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn applying_the_result_again_keeps_the_same_set(
        points in arb_points(), rules in arb_rules(), tz in arb_tz()
    ) {
        let first = apply(&points, &rules, tz);
        let mut kept_ids: Vec<&str> = first.iter().filter(|v| v.keep).map(|v| v.id.as_str()).collect();
        let survivors: Vec<PointTime> = points
            .iter()
            .filter(|p| kept_ids.contains(&p.id.as_str()))
            .cloned()
            .collect();
        let second = apply(&survivors, &rules, tz);
        let mut again: Vec<&str> = second.iter().filter(|v| v.keep).map(|v| v.id.as_str()).collect();
        kept_ids.sort();
        again.sort();
        prop_assert_eq!(kept_ids, again);
    }

    #[test]
    fn the_newest_point_is_kept_when_anything_is(
        points in arb_points(), rules in arb_rules(), tz in arb_tz()
    ) {
        let v = apply(&points, &rules, tz);
        prop_assert_eq!(v.len(), points.len());
        if v.iter().any(|v| v.keep) {
            prop_assert!(v[0].keep);
            prop_assert!(v.iter().all(|x| x.created <= v[0].created));
        }
        let counted = [rules.last, rules.hourly, rules.daily, rules.weekly, rules.monthly, rules.yearly]
            .iter()
            .map(|c| c.unwrap_or(0) as usize)
            .sum::<usize>();
        if rules.within.is_none_or(|d| d.is_zero()) {
            // Without `within`, no more points than the counts allow.
            prop_assert!(v.iter().filter(|v| v.keep).count() <= counted);
        }
    }
}
