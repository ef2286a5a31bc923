//! `/dashboard`: Network Unlock at a glance — requests per hour by outcome over the last day (a
//! server-rendered SVG chart, no script) and the devices that most recently needed a recovery
//! password (they did not unlock by themselves).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use time::OffsetDateTime;

use crate::model::{HourlyUnlocks, Role};
use crate::web::WebState;
use crate::web::chart::{self, Series};
use crate::web::error::PageError;
use crate::web::render::{Nav, html, when};
use crate::web::session::Session;

/// Hours shown in the chart.
pub const HOURS: u32 = 24;
/// Devices listed as having needed recovery.
pub const RECOVERY_ROWS: u32 = 10;

pub struct RecoveryRow {
    pub device_id: i64,
    pub name: String,
    pub disclosed_at: String,
}

pub struct OutcomeTotal {
    pub outcome: String,
    pub count: i64,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct Dashboard {
    nav: Nav,
    chart: String,
    totals: Vec<OutcomeTotal>,
    recovery: Vec<RecoveryRow>,
    device_links: bool,
}

/// One column per hour (oldest first, ending with the current hour), each stacked by outcome;
/// "answered" first so the healthy part sits at the bottom of every column.
pub fn hourly_series(
    rows: &[HourlyUnlocks],
    now: OffsetDateTime,
    hours: u32,
) -> (Vec<String>, Vec<Series>) {
    let this_hour = now.unix_timestamp() - now.unix_timestamp().rem_euclid(3600);
    let first = this_hour - i64::from(hours.saturating_sub(1)) * 3600;
    let labels = (0..hours)
        .map(|i| {
            let t = first + i64::from(i) * 3600;
            format!("{:02}", t.rem_euclid(86_400) / 3600)
        })
        .collect();
    let mut outcomes: Vec<String> = rows.iter().map(|r| r.outcome.clone()).collect();
    outcomes.sort_by_key(|o| (o != "answered", o.clone()));
    outcomes.dedup();
    let series = outcomes
        .into_iter()
        .map(|outcome| {
            let mut values = vec![0_i64; usize::try_from(hours).unwrap_or(0)];
            for r in rows.iter().filter(|r| r.outcome == outcome) {
                let slot = (r.hour.unix_timestamp() - first).div_euclid(3600);
                if let Some(v) = usize::try_from(slot).ok().and_then(|i| values.get_mut(i)) {
                    *v += r.count;
                }
            }
            Series {
                problem: outcome != "answered",
                label: outcome,
                values,
            }
        })
        .collect();
    (labels, series)
}

pub async fn page(State(state): State<WebState>, s: Session) -> Result<Response, PageError> {
    let role = s.require(&[Role::Admin, Role::Helpdesk, Role::Auditor], "Dashboard")?;
    let hourly = state.service.unlocks_per_hour(&s.actor, HOURS).await?;
    let needed = state
        .service
        .recovery_needed(&s.actor, RECOVERY_ROWS)
        .await?;
    let (labels, series) = hourly_series(&hourly, OffsetDateTime::now_utc(), HOURS);
    let totals = series
        .iter()
        .map(|s| OutcomeTotal {
            outcome: s.label.clone(),
            count: s.values.iter().sum(),
        })
        .collect();
    html(&Dashboard {
        nav: Nav::new(&s, "dashboard"),
        chart: chart::columns(
            "unlocks-chart",
            "Network Unlock requests per hour (UTC), by outcome, last 24 hours",
            &labels,
            &series,
        ),
        totals,
        recovery: needed
            .iter()
            .map(|r| RecoveryRow {
                device_id: r.device_id,
                name: r.computer_name.clone(),
                disclosed_at: when(&r.disclosed_at),
            })
            .collect(),
        // The device page is for admins and auditors; the help desk sees the names only.
        device_links: role != Role::Helpdesk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_fill_their_columns_and_answered_comes_first() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000 + 1800)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let hour = |back: i64| {
            OffsetDateTime::from_unix_timestamp(1_700_000_000 - 1_700_000_000 % 3600 - back * 3600)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        };
        let rows = vec![
            HourlyUnlocks {
                hour: hour(0),
                outcome: "unknown_certificate".into(),
                count: 2,
            },
            HourlyUnlocks {
                hour: hour(0),
                outcome: "answered".into(),
                count: 5,
            },
            HourlyUnlocks {
                hour: hour(23),
                outcome: "answered".into(),
                count: 1,
            },
            // Older than the window: dropped, not wrapped around.
            HourlyUnlocks {
                hour: hour(30),
                outcome: "answered".into(),
                count: 9,
            },
        ];
        let (labels, series) = hourly_series(&rows, now, 24);
        assert_eq!(labels.len(), 24);
        assert_eq!(series[0].label, "answered");
        assert_eq!(series[0].values[23], 5);
        assert_eq!(series[0].values[0], 1);
        assert_eq!(series[0].values.iter().sum::<i64>(), 6);
        assert_eq!(series[1].label, "unknown_certificate");
        assert!(series[1].problem && !series[0].problem);
        assert_eq!(series[1].values[23], 2);
    }
}
