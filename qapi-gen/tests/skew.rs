//! Version skew: what a newer QEMU may send — enum values, union branches, members, events and
//! meta-types this schema does not know — decodes to the fallbacks, keeps the raw values, encodes
//! back unchanged, and the session goes on. QEMU 10.0.2 sends none of it, so a scripted peer does.

use qmp_blocking::{Client, Config};
use qmp_qapi::qmp::{self, event, Event};
use qmp_qapi::FromValue;
use qmp_testkit::{FaultPeer, Step, GREETING};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn reply(id: u64, value: serde_json::Value) -> Step {
    Step::Send(format!("{}\r\n", json!({"return": value, "id": id})).into_bytes())
}

#[test]
fn a_newer_qemus_replies_and_events_decode_and_the_session_goes_on() {
    let status =
        json!({"running": true, "status": "hibernating", "singlestep": false, "new-member": [1]});
    let cpus = json!([
        {"cpu-index": 0, "qom-path": "/machine/cpu0", "thread-id": 7, "target": "riscv128", "vlen": 512},
        {"cpu-index": 1, "qom-path": "/machine/cpu1", "thread-id": 8, "target": "x86_64"}
    ]);
    let schema = json!([
        {"name": "future", "meta-type": "module", "files": ["x.json"]},
        {"name": "str", "meta-type": "builtin", "json-type": "string", "features": ["new"]}
    ]);
    let version =
        json!({"qemu": {"major": 12, "minor": 1, "micro": 0}, "package": "", "build": "x"});
    // Line counts are cumulative: the client sends one command per line. One command at a time,
    // each carries id 1 (docs/PROTOCOL.md rule 5: ids are reused).
    let p = FaultPeer::start(vec![
        Step::Send(GREETING.to_vec()),
        Step::ReadLines(1),
        Step::Send(b"{\"return\": {}, \"id\": \"t0\"}\r\n".to_vec()),
        Step::ReadLines(2),
        Step::Send(b"{\"event\": \"FUTURE_EVENT\", \"data\": {\"x\": 1}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n".to_vec()),
        Step::Send(b"{\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": \"j0\", \"status\": \"hibernating\", \"why\": \"new\"}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 3}}\r\n".to_vec()),
        reply(1, status.clone()),
        Step::ReadLines(3),
        reply(1, cpus.clone()),
        Step::ReadLines(4),
        reply(1, schema.clone()),
        Step::ReadLines(5),
        reply(1, version),
        Step::ReadLines(6),
    ]);
    let client = Client::builder()
        .config(Config {
            negotiation_id: Some("t0".into()),
            ..Config::default()
        })
        .timeout(T)
        .connect_unix(p.path())
        .unwrap();

    // Unknown enum value and member in a reply.
    let s = client.run(&qmp::QueryStatus).unwrap();
    assert_eq!(s.status, qmp::RunState::Other("hibernating".into()));
    assert_eq!(s.status.as_str(), "hibernating");
    // Unknown members are dropped: `new-member`, and `singlestep`, which QEMU 10.0 removed.
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({"running": true, "status": "hibernating"})
    );

    // An unknown event, and a known one with an unknown enum value and member: both arrived
    // before the reply above and neither disturbed it.
    let future = client.wait_event("FUTURE_EVENT", |_| true, T).unwrap();
    match Event::try_from(future).unwrap() {
        Event::Unknown { name, data } => assert_eq!(
            (name.as_str(), data["x"].clone()),
            ("FUTURE_EVENT", json!(1))
        ),
        other => panic!("{other:?}"),
    }
    let job = client.wait_event("JOB_STATUS_CHANGE", |_| true, T).unwrap();
    let job = job.decode::<event::JobStatusChange>().unwrap().unwrap();
    assert_eq!(
        (job.id.as_str(), job.status),
        ("j0", qmp::JobStatus::Other("hibernating".into()))
    );

    // An unknown union branch keeps its members; a known one beside it decodes as usual.
    let c = client.run(&qmp::QueryCpusFast).unwrap();
    match &c[0].target {
        qmp::CpuInfoFastBranch::Other(u) => assert_eq!(
            (u.tag.as_str(), u.members["vlen"].clone()),
            ("riscv128", json!(512))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c[1].target, qmp::CpuInfoFastBranch::X86_64);
    assert_eq!(serde_json::to_value(&c).unwrap(), cpus);

    // A meta-type the introspection schema does not know, and an unknown member.
    let infos = client.run(&qmp::QueryQmpSchema).unwrap();
    assert!(matches!(&infos[0].meta_type, qmp::SchemaInfoBranch::Other(u) if u.tag == "module"));
    assert_eq!(serde_json::to_value(&infos).unwrap(), schema);

    // The session went on.
    let v = client.run(&qmp::QueryVersion).unwrap();
    assert_eq!(v.qemu.major, 12);
    client.execute("stop", ()).unwrap_err();
}

#[test]
fn fallbacks_are_counted_and_wrong_kinds_are_still_errors() {
    let before = qmp_qapi::rt::fallbacks();
    assert_eq!(
        qmp::JobStatus::from_value(json!("running")).unwrap(),
        qmp::JobStatus::Running
    );
    assert_eq!(qmp_qapi::rt::fallbacks(), before);
    assert_eq!(
        qmp::JobStatus::from("later"),
        qmp::JobStatus::Other("later".into())
    );
    assert_eq!(qmp_qapi::rt::fallbacks(), before + 1);
    // Skew tolerance is not leniency: a wrong kind or a missing required member fails, with a path.
    let e = qmp::JobInfo::from_value(json!({"id": "j", "type": "backup", "status": 3, "current-progress": 0, "total-progress": 0})).unwrap_err();
    assert_eq!(
        (e.path(), e.message()),
        (".status", "expected a string, got a number")
    );
    let e = qmp::JobInfo::from_value(
        json!({"id": "j", "type": "backup", "status": "running", "total-progress": 0}),
    )
    .unwrap_err();
    assert_eq!(e.message(), "missing member 'current-progress'");
}
