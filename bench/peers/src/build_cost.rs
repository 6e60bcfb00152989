//! Clean release builds of the same minimal tool (connect to a socket, run `query-version`,
//! print the reply) on each client, each in its own temp dir with its own target dir; then the
//! tool is run once against the daemon to show it works.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tool {
    pub name: &'static str,
    dependencies: String,
    main: &'static str,
}

/// The tokio tools all use the same runtime setup: `#[tokio::main(flavor = "current_thread")]`.
const TOKIO: &str = r#"tokio = { version = "1", features = ["rt", "macros"] }"#;

pub fn tools(workspace: &Path) -> Vec<Tool> {
    let path = |c: &str| format!("{c} = {{ path = {:?} }}", workspace.join(c));
    vec![
        Tool {
            name: "qmp-blocking",
            dependencies: path("qmp-blocking"),
            main: r#"fn main() {
    let path = std::env::args().nth(1).expect("socket path");
    let client = qmp_blocking::Client::connect_unix(path).expect("connect");
    println!("{}", client.execute("query-version", ()).expect("query-version"));
}
"#,
        },
        Tool {
            name: "qmp-smol",
            dependencies: format!("{}\nsmol = \"2\"", path("qmp-smol")),
            main: r#"fn main() {
    let path = std::env::args().nth(1).expect("socket path");
    smol::block_on(async {
        let client = qmp_smol::Client::connect_unix(path).await.expect("connect");
        println!("{}", client.execute("query-version", ()).await.expect("query-version"));
    });
}
"#,
        },
        Tool {
            name: "qmp-tokio",
            dependencies: format!("{}\n{TOKIO}", path("qmp-tokio")),
            main: r#"#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = std::env::args().nth(1).expect("socket path");
    let client = qmp_tokio::Client::connect_unix(path).await.expect("connect");
    println!("{}", client.execute("query-version", ()).await.expect("query-version"));
}
"#,
        },
        Tool {
            name: "qapi-rs 0.15 tokio",
            dependencies: format!(
                "qapi = {{ version = \"=0.15.0\", features = [\"qmp\", \"async-tokio-all\"] }}\n{TOKIO}"
            ),
            main: r#"#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = std::env::args().nth(1).expect("socket path");
    let stream = qapi::futures::QmpStreamTokio::open_uds(path).await.expect("connect");
    let stream = stream.negotiate().await.expect("negotiate");
    let (qmp, handle) = stream.spawn_tokio();
    println!("{:?}", qmp.execute(qapi::qmp::query_version {}).await.expect("query-version"));
    drop(qmp);
    handle.await.expect("event loop");
}
"#,
        },
        Tool {
            name: "qapi-rs 0.15 blocking",
            dependencies: "qapi = { version = \"=0.15.0\", features = [\"qmp\"] }".into(),
            main: r#"fn main() {
    let path = std::env::args().nth(1).expect("socket path");
    let stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
    let mut qmp = qapi::Qmp::from_stream(&stream);
    qmp.handshake().expect("handshake");
    println!("{:?}", qmp.execute(&qapi::qmp::query_version {}).expect("query-version"));
}
"#,
        },
        Tool {
            name: "qmp 0.1 (tokio)",
            dependencies: format!("qmp = \"=0.1.1\"\nserde_json = \"1\"\n{TOKIO}"),
            main: r#"#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = std::env::args().nth(1).expect("socket path");
    let client = qmp::Client::connect(qmp::Endpoint::unix(path)).await.expect("connect");
    let version: serde_json::Value = client.execute("query-version", Option::<()>::None).await.expect("query-version");
    println!("{version}");
}
"#,
        },
    ]
}

pub struct Built {
    pub time: Duration,
    /// Distinct packages compiled (build scripts and proc macros included).
    pub crates: usize,
    /// The tool's output against the daemon, trimmed.
    pub ran: Result<String, String>,
}

/// Builds `tool` from scratch in a temp dir and runs it against `socket`.
pub fn build(tool: &Tool, socket: &Path) -> Result<Built, String> {
    let dir = qmp_testkit::TempDir::new().map_err(|e| e.to_string())?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).map_err(|e| e.to_string())?;
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"tool\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n\n[dependencies]\n{}\n",
            tool.dependencies
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(root.join("src/main.rs"), tool.main).map_err(|e| e.to_string())?;
    let cargo = |args: &[&str]| {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(args)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", root.join("target"))
            .env_remove("RUSTFLAGS");
        c
    };
    // Resolving is not part of the build: from the local registry cache, or online if needed.
    let resolved = cargo(&["generate-lockfile", "--offline"])
        .output()
        .is_ok_and(|o| o.status.success());
    let offline: &[&str] = if resolved {
        &["--offline"]
    } else {
        let fetched = cargo(&["fetch"]).output().map_err(|e| e.to_string())?;
        if !fetched.status.success() {
            return Err(String::from_utf8_lossy(&fetched.stderr).into_owned());
        }
        &[]
    };
    let mut args = vec!["build", "--release", "--message-format=json"];
    args.extend_from_slice(offline);
    let start = Instant::now();
    let out = cargo(&args).output().map_err(|e| e.to_string())?;
    let time = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "build failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let mut packages: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| m["package_id"].as_str().map(str::to_owned))
        .collect();
    packages.sort();
    packages.dedup();
    let exe: PathBuf = root.join("target/release/tool");
    let ran = Command::new(&exe)
        .arg(socket)
        .output()
        .map_err(|e| e.to_string())
        .and_then(|o| {
            if o.status.success() {
                Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
        });
    Ok(Built {
        time,
        crates: packages.len(),
        ran,
    })
}
