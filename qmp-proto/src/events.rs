//! Typed data for common QMP events. Decode with [`Event::decode`](crate::Event::decode).

use serde::Deserialize;

/// Typed data of one QMP event.
pub trait EventData: for<'de> Deserialize<'de> {
    /// The event's name.
    const NAME: &'static str;
}

/// `SHUTDOWN`: the VM was shut down (or QEMU is exiting on `quit`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Shutdown {
    /// Whether the guest caused it.
    pub guest: bool,
    /// Why, e.g. `host-qmp-quit`, `guest-shutdown` (QEMU's `ShutdownCause`).
    pub reason: String,
}

impl EventData for Shutdown {
    const NAME: &'static str = "SHUTDOWN";
}

/// `STOP`: the VM was paused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Stop {}

impl EventData for Stop {
    const NAME: &'static str = "STOP";
}

/// `RESUME`: the VM resumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Resume {}

impl EventData for Resume {
    const NAME: &'static str = "RESUME";
}

/// `RESET`: the VM was reset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Reset {
    /// Whether the guest caused it.
    pub guest: bool,
    /// Why, e.g. `host-qmp-system-reset`.
    pub reason: String,
}

impl EventData for Reset {
    const NAME: &'static str = "RESET";
}

/// `JOB_STATUS_CHANGE`: a job moved to a new status.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobStatusChange {
    /// The job's id.
    pub id: String,
    /// The new status: `created`, `running`, `paused`, `ready`, `standby`, `waiting`, `pending`,
    /// `aborting`, `concluded`, `null` (QEMU's `JobStatus`, kept as a string).
    pub status: String,
}

impl EventData for JobStatusChange {
    const NAME: &'static str = "JOB_STATUS_CHANGE";
}

/// `BLOCK_JOB_COMPLETED`: a block job finished (successfully unless `error` is set).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockJobCompleted {
    /// The job type, e.g. `backup`, `mirror`, `commit`, `stream`, `create`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// The job's id (historically the device name).
    pub device: String,
    /// Bytes the job will work on.
    pub len: u64,
    /// Bytes done.
    pub offset: u64,
    /// Rate limit in bytes per second (0: none).
    pub speed: u64,
    /// Why the job failed, when it did.
    pub error: Option<String>,
}

impl EventData for BlockJobCompleted {
    const NAME: &'static str = "BLOCK_JOB_COMPLETED";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use serde_json::json;

    fn ev(name: &str, data: serde_json::Value) -> Event {
        Event {
            name: name.into(),
            data: serde_json::from_value(data).unwrap(),
            timestamp: None,
        }
    }

    #[test]
    fn decode_checks_name_and_shape() {
        let e = ev(
            "JOB_STATUS_CHANGE",
            json!({"id": "j0", "status": "concluded"}),
        );
        assert_eq!(
            e.decode::<JobStatusChange>().unwrap().unwrap().status,
            "concluded"
        );
        assert!(e.decode::<Shutdown>().is_none());
        assert!(ev("SHUTDOWN", json!({"guest": 1}))
            .decode::<Shutdown>()
            .unwrap()
            .is_err());
        assert!(ev("STOP", json!({})).decode::<Stop>().unwrap().is_ok());
        let b = ev(
            "BLOCK_JOB_COMPLETED",
            json!({"device": "j0", "len": 1048576, "offset": 1048576,
            "speed": 0, "type": "backup"}),
        );
        let b = b.decode::<BlockJobCompleted>().unwrap().unwrap();
        assert_eq!(
            (b.job_type.as_str(), b.len, b.error),
            ("backup", 1048576, None)
        );
        let r = ev(
            "RESET",
            json!({"guest": false, "reason": "host-qmp-system-reset"}),
        );
        assert!(!r.decode::<Reset>().unwrap().unwrap().guest);
        assert!(ev("RESUME", json!({})).decode::<Resume>().unwrap().is_ok());
    }
}
