//! Conformance against live QEMU: `query-qmp-schema` of qemu-system-x86_64 and
//! qemu-storage-daemon 10.0.2, decoded into the generated `SchemaInfo`, must match the schema
//! model structurally (members, optionality, enum values, branches, return shapes, allow-oob,
//! special features), and every command, event and type QEMU reports must have a generated
//! counterpart that round-trips samples built from the introspection, without a fallback.

mod support;

use qapi_gen::schema::Schema;
use qmp_blocking::Client;
use qmp_qapi::qmp::{self, SchemaInfoBranch};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use serde_json::Value;
use support::introspect::{Comparison, Live};
use support::qmp_table;

/// Deep enough to reach every member of every type at least once from its own root.
const DEPTH: usize = 4;

fn same(sample: &Value, back: &Value) -> bool {
    // A command without arguments encodes as nothing (`null`); QEMU's is an empty object.
    sample == back || (back.is_null() && sample.as_object().is_some_and(|m| m.is_empty()))
}

fn round_trips(
    live: &Live,
    ty: &str,
    cap: usize,
    f: support::RoundTrip,
    what: &str,
    errors: &mut Vec<String>,
) -> usize {
    let n = live.fanout(ty).min(cap);
    for k in 0..n {
        let sample = live.sample(ty, k, DEPTH);
        match f(sample.clone()) {
            Ok(back) if same(&sample, &back) => {}
            Ok(back) => errors.push(format!(
                "{what}: sample {k} came back different:\n  sent {sample}\n  got  {back}"
            )),
            Err(e) => errors.push(format!(
                "{what}: sample {k} did not decode: {e}\n  sent {sample}"
            )),
        }
    }
    n
}

fn check(emulator: Emulator, test: &str) {
    let Some(qemu) = Qemu::start(QemuOptions::new(emulator), test) else {
        return;
    };
    let schemas = qapi_gen::load(&support::schema_dir()).expect("schema model");
    let schema: &Schema = &schemas.system;
    let client = Client::connect_unix(qemu.socket()).expect("connect");
    let before = qmp_qapi::rt::fallbacks();
    let infos = client
        .run(&qmp::QueryQmpSchema)
        .expect("query-qmp-schema, typed");
    assert_eq!(
        qmp_qapi::rt::fallbacks(),
        before,
        "SchemaInfo decoded only with fallbacks"
    );
    let live = Live::new(infos);

    let mut c = Comparison::default();
    let mut samples = 0;
    let commands = live.names(false);
    let events = live.names(true);
    let mut have = (0, 0);
    for name in &commands {
        live.compare_entity(schema, name, &mut c);
        let Some(codec) = qmp_table::command(name) else {
            c.errors.push(format!("command {name}: no generated type"));
            continue;
        };
        have.0 += 1;
        assert_eq!(codec.name, name);
        let Some(SchemaInfoBranch::Command(lc)) = live.by_name.get(name).map(|i| &i.meta_type)
        else {
            continue;
        };
        if codec.allow_oob != lc.allow_oob.unwrap_or(false) {
            c.errors.push(format!("command {name}: ALLOW_OOB differs"));
        }
        samples += round_trips(
            &live,
            &lc.arg_type,
            64,
            codec.args,
            &format!("{name} arguments"),
            &mut c.errors,
        );
        samples += round_trips(
            &live,
            &lc.ret_type,
            64,
            codec.ret,
            &format!("{name} return"),
            &mut c.errors,
        );
    }
    for name in &events {
        live.compare_entity(schema, name, &mut c);
        let Some(codec) = qmp_table::event(name) else {
            c.errors.push(format!("event {name}: no generated type"));
            continue;
        };
        have.1 += 1;
        assert_eq!(codec.name, name);
        let Some(SchemaInfoBranch::Event(le)) = live.by_name.get(name).map(|i| &i.meta_type) else {
            continue;
        };
        samples += round_trips(
            &live,
            &le.arg_type,
            64,
            codec.data,
            &format!("event {name}"),
            &mut c.errors,
        );
    }
    // Every type QEMU uses, through its own generated type: every enum value, every branch.
    let matched = c.matched_types.clone();
    for (model, lives) in &matched {
        let Some(f) = qmp_table::data_type(model) else {
            c.errors.push(format!("type {model}: no generated type"));
            continue;
        };
        for l in lives {
            samples += round_trips(&live, l, 256, f, &format!("type {model}"), &mut c.errors);
        }
    }
    eprintln!(
        "{}: {} of {} commands and {} of {} events have generated counterparts; {} model/live type pairs compared; {} of the model's {} data types matched; {} samples round-tripped",
        emulator.binary(),
        have.0,
        commands.len(),
        have.1,
        events.len(),
        c.pairs.len(),
        matched.len(),
        schema.defs.iter().filter(|d| !matches!(d.kind, qapi_gen::schema::Kind::Command { .. } | qapi_gen::schema::Kind::Event { .. })).count(),
        samples
    );
    assert!(
        c.errors.is_empty(),
        "{} mismatches; the first:\n{}",
        c.errors.len(),
        c.errors
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(commands.len() > 50 && have.0 == commands.len() && have.1 == events.len());
}

#[test]
fn qemu_system_matches_the_generated_schema() {
    check(Emulator::System, "qemu_system_matches_the_generated_schema");
}

#[test]
fn storage_daemon_matches_the_generated_schema() {
    check(
        Emulator::StorageDaemon,
        "storage_daemon_matches_the_generated_schema",
    );
}
