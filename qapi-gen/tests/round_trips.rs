//! Typed round trips against real QEMU: commands sent as generated types with the blocking
//! client's `run`, replies and events decoded into generated types (no `Value` handled by the
//! test), and no decode falling back to an `Other`/`Unknown` variant.

use qmp_blocking::Client;
use qmp_proto::events::EventData;
use qmp_qapi::qmp::{self, event, Event};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The next event of type `E` for which `matches` holds, decoded; what the typed event API of
/// the clients does.
fn wait_typed<E: EventData>(client: &Client, matches: impl Fn(&E) -> bool) -> E {
    let e = client
        .wait_event(
            E::NAME,
            |e| {
                e.decode::<E>()
                    .is_some_and(|d| d.is_ok_and(|d| matches(&d)))
            },
            WAIT,
        )
        .unwrap_or_else(|err| panic!("waiting for {}: {err}", E::NAME));
    e.decode::<E>().expect("name").expect("data")
}

fn system() -> Option<Qemu> {
    let mut options = QemuOptions::new(Emulator::System);
    // A PC with one CPU and one disk (a null-co node behind virtio-blk), paused at start.
    options.extra_args = [
        "-M",
        "pc,accel=tcg",
        "-m",
        "64",
        "-S",
        "-blockdev",
        "null-co,node-name=disk0",
        "-device",
        "virtio-blk-pci,drive=disk0,id=vd0",
    ]
    .map(String::from)
    .to_vec();
    Qemu::start(options, "typed_round_trips_on_qemu_system")
}

#[test]
fn typed_round_trips_on_qemu_system() {
    let Some(qemu) = system() else { return };
    let client = Client::connect_unix(qemu.socket()).expect("connect");
    let fallbacks = qmp_qapi::rt::fallbacks();

    let v = client.run(&qmp::QueryVersion).unwrap();
    assert_eq!((v.qemu.major, v.qemu.minor), (10, 0));

    let s = client.run(&qmp::QueryStatus).unwrap();
    assert_eq!((s.status, s.running), (qmp::RunState::Prelaunch, false));

    let commands = client.run(&qmp::QueryCommands).unwrap();
    assert!(commands.iter().any(|c| c.name == "blockdev-add"));

    let schema = client.run(&qmp::QueryQmpSchema).unwrap();
    let objects = schema
        .iter()
        .filter(|i| matches!(i.meta_type, qmp::SchemaInfoBranch::Object(_)))
        .count();
    let find = |name: &str| {
        schema
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let qmp::SchemaInfoBranch::Command(add) = &find("blockdev-add").meta_type else {
        panic!("blockdev-add is a command")
    };
    let qmp::SchemaInfoBranch::Object(args) = &find(&add.arg_type).meta_type else {
        panic!("its arguments are an object")
    };
    assert_eq!(args.tag.as_deref(), Some("driver"));
    assert!(
        objects > 300 && schema.len() > 1000,
        "{objects} objects of {}",
        schema.len()
    );

    // blockdev-add with a typed union, then the nodes back as typed BlockDeviceInfo.
    for (name, size) in [("src", 1 << 20), ("dst", 1 << 20)] {
        let mut opts = qmp::BlockdevOptions::new(qmp::BlockdevOptionsBranch::NullCo(
            qmp::BlockdevOptionsNull {
                size: Some(size),
                ..Default::default()
            },
        ));
        opts.node_name = Some(name.into());
        client.run(&qmp::BlockdevAdd(opts)).unwrap();
    }
    let nodes = client
        .run(&qmp::QueryNamedBlockNodes { flat: Some(true) })
        .unwrap();
    let src = nodes
        .iter()
        .find(|n| n.node_name.as_deref() == Some("src"))
        .expect("src");
    assert_eq!(
        (src.drv.as_str(), src.image.virtual_size),
        ("null-co", 1 << 20)
    );

    // A backup job: typed JOB_STATUS_CHANGE through to concluded, BLOCK_JOB_COMPLETED, query-jobs.
    let mut backup = qmp::BlockdevBackup::new("src", qmp::MirrorSyncMode::Full, "dst");
    backup.job_id = Some("job0".into());
    backup.auto_dismiss = Some(false);
    client.run(&backup).unwrap();
    let done = wait_typed::<event::BlockJobCompleted>(&client, |e| e.device == "job0");
    assert_eq!(
        (done.r#type, done.len, done.offset, done.error),
        (qmp::JobType::Backup, 1 << 20, 1 << 20, None)
    );
    wait_typed::<event::JobStatusChange>(&client, |e| {
        e.id == "job0" && e.status == qmp::JobStatus::Concluded
    });
    let jobs = client.run(&qmp::QueryJobs).unwrap();
    assert_eq!(
        (jobs[0].id.as_str(), &jobs[0].status, &jobs[0].r#type),
        ("job0", &qmp::JobStatus::Concluded, &qmp::JobType::Backup)
    );
    client.run(&qmp::JobDismiss { id: "job0".into() }).unwrap();
    wait_typed::<event::JobStatusChange>(&client, |e| {
        e.id == "job0" && e.status == qmp::JobStatus::Null
    });

    let machines = client
        .run(&qmp::QueryMachines { compat_props: None })
        .unwrap();
    assert!(machines.iter().any(|m| m.alias.as_deref() == Some("pc")));

    let cpus = client.run(&qmp::QueryCpusFast).unwrap();
    assert_eq!(cpus.len(), 1);
    assert!(
        matches!(cpus[0].target, qmp::CpuInfoFastBranch::X86_64),
        "{:?}",
        cpus[0].target
    );

    let props = client
        .run(&qmp::QomList {
            path: "/machine".into(),
        })
        .unwrap();
    assert!(props.iter().any(|p| p.name == "type"));
    let ty = client
        .run(&qmp::QomGet {
            path: "/machine".into(),
            property: "type".into(),
        })
        .unwrap();
    assert!(
        ty.as_str().is_some_and(|t| t.starts_with("pc-i440fx")),
        "{ty}"
    );

    let migration = client.run(&qmp::QueryMigrate).unwrap();
    assert_eq!(migration.status, None);

    let hmp = client
        .run(&qmp::HumanMonitorCommand::new("info status"))
        .unwrap();
    assert!(hmp.contains("VM status: paused (prelaunch)"), "{hmp:?}");

    let block = client.run(&qmp::QueryBlock).unwrap();
    let disk = block
        .iter()
        .find(|b| b.qdev.as_deref().is_some_and(|q| q.contains("vd0")))
        .expect("the disk");
    assert_eq!(
        disk.inserted.as_ref().map(|i| i.drv.as_str()),
        Some("null-co")
    );

    let chardevs = client.run(&qmp::QueryChardev).unwrap();
    assert!(chardevs
        .iter()
        .any(|c| c.label == "qmp0" && c.frontend_open));

    // Run state events, typed both ways: as EventData and through the Event enum.
    client.run(&qmp::Cont).unwrap();
    let resume = client.wait_event("RESUME", |_| true, WAIT).unwrap();
    assert_eq!(
        Event::try_from(resume).unwrap(),
        Event::Resume(event::Resume)
    );
    client.run(&qmp::SystemReset).unwrap();
    let reset = wait_typed::<event::Reset>(&client, |_| true);
    assert_eq!(
        (reset.guest, reset.reason),
        (false, qmp::ShutdownCause::HostQmpSystemReset)
    );
    client.run(&qmp::Stop).unwrap();
    wait_typed::<event::Stop>(&client, |_| true);
    assert_eq!(
        client.run(&qmp::QueryStatus).unwrap().status,
        qmp::RunState::Paused
    );

    assert_eq!(
        qmp_qapi::rt::fallbacks(),
        fallbacks,
        "some reply decoded only to a fallback"
    );
    client.quit().unwrap();
}
