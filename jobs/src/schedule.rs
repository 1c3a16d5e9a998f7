//! When schedules fire (DESIGN §9): cron expressions in UTC and the missed-fire policies. Pure
//! functions of the schedule and the clock; the scheduler in the workers applies them and
//! Postgres's unique `(schedule_id, fire_at)` makes each fire happen once however many
//! replicas tick.
//!
//! Expressions are the usual five fields, `minute hour day-of-month month day-of-week` (days of
//! the week `0`-`7`, `0` and `7` Sunday, or `SUN`-`SAT`), or one of `hourly`, `daily`, `weekly`
//! (Sundays), `monthly`. A day of the month that a month lacks (the 31st, February 29th) is
//! skipped in that month, as cron does.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use nimbus_domain::MissedFirePolicy;

/// How late a fire under [`MissedFirePolicy::Skip`] may still happen.
pub const SKIP_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// The most fires one schedule gets per tick; the rest follow on the next tick.
pub const MAX_FIRES_PER_TICK: usize = 1000;

/// A parsed expression.
#[derive(Clone, Debug)]
pub struct CronSpec {
    text: String,
    schedule: cron::Schedule,
}

/// An expression that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

impl CronSpec {
    /// Parses `text` (see the module's doc).
    pub fn parse(text: &str) -> Result<CronSpec, CronError> {
        let text = text.trim();
        let six = match text.to_ascii_lowercase().as_str() {
            "hourly" => "0 0 * * * *".to_owned(),
            "daily" => "0 0 0 * * *".to_owned(),
            "weekly" => "0 0 0 * * 1".to_owned(),
            "monthly" => "0 0 0 1 * *".to_owned(),
            _ => {
                let fields: Vec<&str> = text.split_whitespace().collect();
                let [minute, hour, day, month, weekday] = fields[..] else {
                    return Err(CronError(format!(
                        "{text:?} is not a cron expression: five fields (minute hour day-of-month month day-of-week), \
                         or hourly, daily, weekly, monthly"
                    )));
                };
                format!("0 {minute} {hour} {day} {month} {}", weekdays(weekday)?)
            }
        };
        let schedule = cron::Schedule::from_str(&six).map_err(|e| CronError(format!("{text:?}: {e}")))?;
        if schedule.upcoming(Utc).next().is_none() {
            return Err(CronError(format!("{text:?} never fires")));
        }
        Ok(CronSpec { text: text.to_owned(), schedule })
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&t).next()
    }

    /// The shortest time between two consecutive fires after `from`, looking at the next
    /// 1000 fires or the next 400 days, whichever ends first (`None`: fewer than two fires).
    pub fn shortest_gap(&self, from: DateTime<Utc>) -> Option<chrono::Duration> {
        let horizon = from + chrono::Duration::days(400);
        let fires: Vec<DateTime<Utc>> = self.schedule.after(&from).take(1000).take_while(|t| *t <= horizon).collect();
        fires.windows(2).map(|w| w[1] - w[0]).min()
    }
}

/// The day-of-week field in the `cron` crate's numbering (1 = Sunday ... 7 = Saturday) from
/// cron's (0 or 7 = Sunday ... 6 = Saturday): a list of the days it names.
fn weekdays(field: &str) -> Result<String, CronError> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let bad = || CronError(format!("day of the week {field:?}: use 0-7 (0 and 7 are Sunday) or SUN-SAT"));
    let day = |s: &str| -> Result<u32, CronError> {
        const NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        match NAMES.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            Some(i) => Ok(i as u32),
            None => s.parse::<u32>().ok().filter(|d| *d <= 7).ok_or_else(bad),
        }
    };
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(bad)?),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None if step > 1 => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        if from > to {
            return Err(bad());
        }
        for d in (from..=to).step_by(step as usize) {
            days[(d % 7) as usize] = true;
        }
    }
    let list: Vec<String> = (0..7).filter(|d| days[*d]).map(|d| (d + 1).to_string()).collect();
    if list.is_empty() { Err(bad()) } else { Ok(list.join(",")) }
}

/// What a tick does with one due schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The fire times to fire now, oldest first.
    pub fires: Vec<DateTime<Utc>>,
    /// The schedule's next fire time afterwards.
    pub next: DateTime<Utc>,
}

/// The fires of a schedule due at `due` (its `next_fire_at`, a fire time of `spec`) when the
/// clock shows `now`, under `policy`. `None` when the expression has no time after `due`.
pub fn plan(spec: &CronSpec, due: DateTime<Utc>, now: DateTime<Utc>, policy: MissedFirePolicy) -> Option<Plan> {
    if due > now {
        return Some(Plan { fires: Vec::new(), next: due });
    }
    // The fire times from `due` up to `now`, and the first one after.
    let mut passed = vec![due];
    let mut next = spec.next_after(due)?;
    while next <= now {
        if policy == MissedFirePolicy::CatchUpAll && passed.len() == MAX_FIRES_PER_TICK {
            // The rest on the next tick.
            return Some(Plan { fires: passed, next });
        }
        if policy == MissedFirePolicy::CatchUpAll {
            passed.push(next);
        } else {
            passed = vec![next];
        }
        next = spec.next_after(next)?;
    }
    let fires = match policy {
        MissedFirePolicy::CatchUpAll | MissedFirePolicy::LatestOnly => passed,
        MissedFirePolicy::Skip => passed.into_iter().filter(|at| now - *at <= SKIP_GRACE).collect(),
    };
    Some(Plan { fires, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> DateTime<Utc> {
        CronSpec::parse(expr).unwrap().next_after(t(after)).unwrap()
    }

    #[test]
    fn five_fields_and_names_read_as_cron_reads_them() {
        // 2026-12-06 is a Sunday.
        assert_eq!(next("0 3 * * *", "2026-12-06T03:00:00Z"), t("2026-12-07T03:00:00Z"));
        assert_eq!(next("0 3 * * 0", "2026-12-06T00:00:00Z"), t("2026-12-06T03:00:00Z"));
        assert_eq!(next("0 3 * * 7", "2026-12-06T00:00:00Z"), t("2026-12-06T03:00:00Z"));
        assert_eq!(next("0 3 * * 1-5", "2026-12-06T00:00:00Z"), t("2026-12-07T03:00:00Z"));
        assert_eq!(next("0 3 * * SAT", "2026-12-06T00:00:00Z"), t("2026-12-12T03:00:00Z"));
        assert_eq!(next("0 3 * * 5-7", "2026-12-06T04:00:00Z"), t("2026-12-11T03:00:00Z"));
        assert_eq!(next("*/15 * * * *", "2026-12-06T00:07:00Z"), t("2026-12-06T00:15:00Z"));
        assert_eq!(next("hourly", "2026-12-06T00:07:00Z"), t("2026-12-06T01:00:00Z"));
        assert_eq!(next("daily", "2026-12-06T00:07:00Z"), t("2026-12-07T00:00:00Z"));
        assert_eq!(next("weekly", "2026-12-06T00:07:00Z"), t("2026-12-13T00:00:00Z"));
        assert_eq!(next("monthly", "2026-12-06T00:07:00Z"), t("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn month_ends_and_leap_days_fire_only_where_they_exist() {
        assert_eq!(next("0 0 31 * *", "2027-01-31T00:00:00Z"), t("2027-03-31T00:00:00Z"));
        assert_eq!(next("0 0 29 2 *", "2026-12-06T00:00:00Z"), t("2028-02-29T00:00:00Z"));
        assert_eq!(next("0 12 28-31 2 *", "2028-02-28T12:00:00Z"), t("2028-02-29T12:00:00Z"));
    }

    #[test]
    fn what_is_not_an_expression_says_why() {
        for bad in ["", "* * * *", "61 * * * *", "0 3 * * 8", "0 3 * * 5-1", "0 0 30 2 *", "every day"] {
            assert!(CronSpec::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CronSpec::parse("0 3 * * 9").unwrap_err().to_string().contains("day of the week"));
    }

    #[test]
    fn a_three_hour_outage_fires_by_policy() {
        let hourly = CronSpec::parse("0 * * * *").unwrap();
        let (due, now) = (t("2026-12-06T01:00:00Z"), t("2026-12-06T04:00:30Z"));
        let all = plan(&hourly, due, now, MissedFirePolicy::CatchUpAll).unwrap();
        let hours: Vec<_> = ["01", "02", "03", "04"].iter().map(|h| t(&format!("2026-12-06T{h}:00:00Z"))).collect();
        assert_eq!(all, Plan { fires: hours.clone(), next: t("2026-12-06T05:00:00Z") });
        let latest = plan(&hourly, due, now, MissedFirePolicy::LatestOnly).unwrap();
        assert_eq!(latest, Plan { fires: vec![hours[3]], next: t("2026-12-06T05:00:00Z") });
        // 30 s late is within the grace: the 04:00 fire happens, the older ones do not.
        let skip = plan(&hourly, due, now, MissedFirePolicy::Skip).unwrap();
        assert_eq!(skip, Plan { fires: vec![hours[3]], next: t("2026-12-06T05:00:00Z") });
        let late = plan(&hourly, due, t("2026-12-06T04:05:00Z"), MissedFirePolicy::Skip).unwrap();
        assert_eq!(late, Plan { fires: vec![], next: t("2026-12-06T05:00:00Z") });
        // Not due yet: nothing, and the schedule stays as it is.
        let early = plan(&hourly, t("2026-12-06T05:00:00Z"), now, MissedFirePolicy::CatchUpAll).unwrap();
        assert_eq!(early, Plan { fires: vec![], next: t("2026-12-06T05:00:00Z") });
    }

    #[test]
    fn a_long_catch_up_is_spread_over_ticks() {
        let minutely = CronSpec::parse("* * * * *").unwrap();
        let due = t("2026-12-01T00:00:00Z");
        let first = plan(&minutely, due, t("2026-12-06T00:00:00Z"), MissedFirePolicy::CatchUpAll).unwrap();
        assert_eq!(first.fires.len(), MAX_FIRES_PER_TICK);
        assert_eq!(first.next, due + chrono::Duration::minutes(MAX_FIRES_PER_TICK as i64));
    }

    #[test]
    fn shortest_gap_is_the_tightest_pair_of_fires() {
        let from = t("2026-12-06T00:00:00Z");
        let gap = |e: &str| CronSpec::parse(e).unwrap().shortest_gap(from).map(|d| d.num_minutes());
        assert_eq!(gap("*/5 * * * *"), Some(5));
        assert_eq!(gap("0 3 * * *"), Some(24 * 60));
        assert_eq!(gap("daily"), Some(24 * 60));
        assert_eq!(gap("0 3,4 * * *"), Some(60));
        assert_eq!(gap("weekly"), Some(7 * 24 * 60));
        // A leap day fires less than twice in the 400 days looked at.
        assert_eq!(gap("0 0 29 2 *"), None);
    }
}
