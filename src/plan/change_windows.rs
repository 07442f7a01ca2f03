//! Change windows: when disruptive and farm-level work may start. Plain
//! arithmetic on ms since the Unix epoch (UTC; 1970-01-01 was a Thursday),
//! so the same code serves wall-clock time on a real fleet and virtual time
//! from 0 in the simulation.
//!
//! Pure: no clock, no time-zone database, no I/O. An empty list means work
//! may start at any time.

use crate::model::ChangeWindow;

pub const MINUTE_MS: u64 = 60 * 1000;
pub const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// Monday = 0 … Sunday = 6, of the UTC day `day` (days since the epoch).
fn weekday(day: u64) -> u8 {
    // Day 0 (1970-01-01) was a Thursday.
    ((day + 3) % 7) as u8
}

/// Whether `w` is open at `now_ms`. A window belongs to the day it starts on:
/// one that wraps past midnight is open on the next day until its end.
fn window_open(w: &ChangeWindow, now_ms: u64) -> bool {
    let day = now_ms / DAY_MS;
    let t = now_ms % DAY_MS;
    let (start, end) = (w.start_min as u64 * MINUTE_MS, w.end_min as u64 * MINUTE_MS);
    if start < end {
        w.on(weekday(day)) && (start..end).contains(&t)
    } else {
        let started_today = w.on(weekday(day)) && t >= start;
        let started_yesterday = day > 0 && w.on(weekday(day - 1)) && t < end;
        started_today || started_yesterday
    }
}

/// May disruptive or farm-level work start at `now_ms`?
pub fn open_at(windows: &[ChangeWindow], now_ms: u64) -> bool {
    windows.is_empty() || windows.iter().any(|w| window_open(w, now_ms))
}

/// The first instant at or after `now_ms` when work may start: `now_ms`
/// itself when a window is open (or there are none), `None` when no window
/// ever opens (every window has an empty set of days).
pub fn next_open(windows: &[ChangeWindow], now_ms: u64) -> Option<u64> {
    if open_at(windows, now_ms) {
        return Some(now_ms);
    }
    // Closed now, so the next opening is the start of some window: look at
    // every start from today to a week ahead (every weekday comes round).
    let today = now_ms / DAY_MS;
    windows
        .iter()
        .flat_map(|w| {
            (today..=today + 7).filter(|&d| w.on(weekday(d))).map(move |d| d * DAY_MS + w.start_min as u64 * MINUTE_MS)
        })
        .filter(|&t| t >= now_ms)
        .min()
}

/// `2026-11-27 02:00 UTC` for ms since the epoch.
pub fn format_utc(ms: u64) -> String {
    let days = (ms / DAY_MS) as i64;
    let minute = (ms % DAY_MS) / MINUTE_MS;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", minute / 60, minute % 60)
}

/// `drover-20261127T020000Z`: the name of a snapshot drover takes at `ms`
/// (UTC, sorts chronologically, nothing a shell or LVM would need quoted).
pub fn snapshot_name(ms: u64) -> String {
    let days = (ms / DAY_MS) as i64;
    let secs = (ms % DAY_MS) / 1000;
    let (y, m, d) = civil_from_days(days);
    format!("drover-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Proleptic Gregorian date of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 60 * MINUTE_MS;
    /// 2026-11-23 00:00 UTC, a Monday.
    const MON: u64 = 20_780 * DAY_MS;

    #[test]
    fn snapshot_names_are_utc_seconds_and_sort_by_time() {
        assert_eq!(snapshot_name(MON + 2 * HOUR + 61_999), "drover-20261123T020101Z");
        assert_eq!(snapshot_name(0), "drover-19700101T000000Z");
        assert!(snapshot_name(MON) < snapshot_name(MON + 1000));
        assert!(snapshot_name(MON + 23 * HOUR) < snapshot_name(MON + 24 * HOUR));
    }

    fn win(days: &[u8], start: (u32, u32), end: (u32, u32)) -> ChangeWindow {
        ChangeWindow {
            days: days.iter().fold(0, |acc, d| acc | 1 << d),
            start_min: start.0 * 60 + start.1,
            end_min: end.0 * 60 + end.1,
        }
    }

    const WEEKDAYS: [u8; 5] = [0, 1, 2, 3, 4];
    const EVERY_DAY: [u8; 7] = [0, 1, 2, 3, 4, 5, 6];

    #[test]
    fn the_epoch_was_a_thursday_and_the_test_monday_is_one() {
        assert_eq!(weekday(0), 3);
        assert_eq!(weekday(MON / DAY_MS), 0);
        assert_eq!(format_utc(MON), "2026-11-23 00:00 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400_000 + 90 * MINUTE_MS), "2000-02-29 01:30 UTC");
        assert_eq!(format_utc(MON + 4 * DAY_MS + 2 * HOUR), "2026-11-27 02:00 UTC");
    }

    #[test]
    fn no_windows_means_always_open() {
        assert!(open_at(&[], MON + 13 * HOUR));
        assert_eq!(next_open(&[], 12_345), Some(12_345));
    }

    #[test]
    fn a_weekday_window_is_open_from_start_up_to_its_end() {
        let w = [win(&WEEKDAYS, (2, 0), (6, 0))];
        assert!(!open_at(&w, MON + 2 * HOUR - 1));
        assert!(open_at(&w, MON + 2 * HOUR));
        assert!(open_at(&w, MON + 6 * HOUR - 1));
        assert!(!open_at(&w, MON + 6 * HOUR), "the end is exclusive");
        // Friday yes, Saturday and Sunday no.
        assert!(open_at(&w, MON + 4 * DAY_MS + 3 * HOUR));
        assert!(!open_at(&w, MON + 5 * DAY_MS + 3 * HOUR));
        assert!(!open_at(&w, MON + 6 * DAY_MS + 3 * HOUR));
    }

    #[test]
    fn a_window_that_wraps_belongs_to_the_day_it_starts() {
        // Friday 22:00 to Saturday 02:00 only.
        let w = [win(&[4], (22, 0), (2, 0))];
        let fri = MON + 4 * DAY_MS;
        assert!(!open_at(&w, fri + 21 * HOUR));
        assert!(open_at(&w, fri + 22 * HOUR));
        assert!(open_at(&w, fri + DAY_MS + HOUR), "Saturday 01:00 is still Friday's window");
        assert!(!open_at(&w, fri + DAY_MS + 2 * HOUR));
        assert!(!open_at(&w, fri + DAY_MS + 22 * HOUR), "Saturday evening has no window");
        assert!(!open_at(&w, fri + HOUR), "Friday 01:00 would be Thursday's window");
        // Ending at midnight (end 00:00) wraps to the day's end exactly.
        let w = [win(&[0], (23, 0), (0, 0))];
        assert!(open_at(&w, MON + 23 * HOUR + 59 * MINUTE_MS));
        assert!(!open_at(&w, MON + DAY_MS));
    }

    #[test]
    fn a_whole_day_window_ends_at_24_00() {
        let w = [win(&[6], (0, 0), (24, 0))];
        let sun = MON + 6 * DAY_MS;
        assert!(open_at(&w, sun));
        assert!(open_at(&w, sun + DAY_MS - 1));
        assert!(!open_at(&w, sun + DAY_MS));
        assert!(!open_at(&w, sun - 1));
    }

    #[test]
    fn a_wrapping_window_on_the_epoch_day_has_no_day_before() {
        // Thursday (day 0) 00:30 would be Wednesday's window: there is none before the epoch.
        let w = [win(&[2], (22, 0), (1, 0))];
        assert!(!open_at(&w, 30 * MINUTE_MS));
        assert_eq!(next_open(&w, 0), Some(6 * DAY_MS + 22 * HOUR));
    }

    #[test]
    fn next_open_finds_the_next_start_across_the_week() {
        let w = [win(&WEEKDAYS, (2, 0), (6, 0))];
        // Inside: now.
        assert_eq!(next_open(&w, MON + 3 * HOUR), Some(MON + 3 * HOUR));
        // Monday before the window: today at 02:00.
        assert_eq!(next_open(&w, MON + HOUR), Some(MON + 2 * HOUR));
        // Monday after it: Tuesday 02:00.
        assert_eq!(next_open(&w, MON + 6 * HOUR), Some(MON + DAY_MS + 2 * HOUR));
        // Friday after it: the next Monday, across the weekend.
        assert_eq!(next_open(&w, MON + 4 * DAY_MS + 7 * HOUR), Some(MON + 7 * DAY_MS + 2 * HOUR));
        // Sunday once a week: a week ahead when it has just closed.
        let sunday = [win(&[6], (2, 0), (3, 0))];
        let sun = MON + 6 * DAY_MS;
        assert_eq!(next_open(&sunday, sun + 3 * HOUR), Some(sun + 7 * DAY_MS + 2 * HOUR));
        // Several windows: the earliest start wins.
        let two = [win(&[2], (9, 0), (10, 0)), win(&EVERY_DAY, (23, 0), (1, 0))];
        assert_eq!(next_open(&two, MON + 12 * HOUR), Some(MON + 23 * HOUR));
        assert_eq!(next_open(&two, MON + DAY_MS + HOUR), Some(MON + DAY_MS + 23 * HOUR));
        assert_eq!(next_open(&two, MON + 2 * DAY_MS + 2 * HOUR), Some(MON + 2 * DAY_MS + 9 * HOUR));
        // No days at all: never.
        assert_eq!(next_open(&[win(&[], (1, 0), (2, 0))], MON), None);
    }

    #[test]
    fn next_open_is_always_open_and_nothing_opens_earlier() {
        // Brute force over a fortnight, minute by minute, on a mix of windows.
        let w = [win(&[0, 2], (22, 30), (1, 15)), win(&[5], (10, 0), (10, 1)), win(&[3], (0, 0), (24, 0))];
        let mut t = MON;
        while t < MON + 14 * DAY_MS {
            let next = next_open(&w, t).expect("a window opens");
            assert!(next >= t && open_at(&w, next), "at {}", format_utc(t));
            let mut u = t;
            while u < next {
                assert!(!open_at(&w, u), "{} is open before next_open {}", format_utc(u), format_utc(next));
                u += MINUTE_MS;
            }
            t += 37 * MINUTE_MS;
        }
    }
}
