//! Driving a recorded job again: re-send only the events whose latest state is
//! failed, or resume every event never delivered. The caller hands the job's events
//! back (the runtime keeps no files); they are checked against what the history
//! recorded (destination, count, fingerprint) before anything is sent.

use std::sync::Arc;

use crate::core::events::EventList;
use crate::core::job::JobFingerprint;
use crate::core::model::Destination;
use crate::store::history::History;

/// Which events of a recorded job to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redrive {
    /// Events whose latest state is failed (pending ones are left alone).
    Failed,
    /// Every event not delivered nor skipped: failed and never sent.
    Undelivered,
}

/// What to send: the indices, and where the job's events came from.
#[derive(Debug)]
pub struct Plan {
    pub only: Vec<usize>,
    pub source: String,
}

/// Check the job against `events` and `dest`, and list what to send. Blocking (it
/// reads `SQLite`): run it off the async workers. Errors name the job.
pub fn plan(
    history: &History,
    what: Redrive,
    job: &str,
    dest: &Destination,
    events: &Arc<EventList>,
    fingerprint: &JobFingerprint,
) -> Result<Plan, String> {
    let info = history
        .job(job)
        .map_err(|e| format!("job {job}: {e}"))?
        .ok_or_else(|| format!("no job \"{job}\" in {}", history.path().display()))?;
    info.check_redrive(dest, events.len(), fingerprint)?;
    let ranges = match what {
        Redrive::Failed => history.failed_ranges(job),
        Redrive::Undelivered => history.undelivered_ranges(job),
    }
    .map_err(|e| format!("job {job}: {e}"))?;
    let only = ranges
        .into_iter()
        .flat_map(|(a, b)| a..=b)
        .filter(|i| *i < events.len())
        .collect();
    Ok(Plan {
        only,
        source: info.source,
    })
}
