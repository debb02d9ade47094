//! The packaging: the compose file is valid for the docker-compose of this machine and says what
//! the README says, and the local image build gives an image that runs the binary, its classic
//! names, rsync and ssh. (env/custom.env is generated from the settings catalog and checked by
//! the catalog's own tests, src/settings/catalog.rs.)

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// compose

/// `docker-compose config` of compose/docker-compose.yml, on env/custom.env.
fn compose_config(extra: &[&str]) -> Output {
    Command::new("docker-compose")
        .env("XIVO_HA_CUSTOM_ENV", repo().join("env/custom.env"))
        .env_remove("XIVO_HA_VERSION")
        .arg("-f")
        .arg(repo().join("compose/docker-compose.yml"))
        .args(extra)
        .arg("config")
        .output()
        .expect("docker-compose runs")
}

/// The services of `docker-compose config`'s output, each as its block of YAML.
fn services(yaml: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_services = false;
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            let name = name.trim_end_matches(':').to_owned();
            out.insert(name.clone(), String::new());
            current = Some(name);
        } else if let Some(name) = &current {
            let block = out.get_mut(name).unwrap();
            block.push_str(line.trim());
            block.push('\n');
        }
    }
    out
}

#[test]
fn the_compose_file_is_valid_and_says_what_the_readme_says() {
    let output = compose_config(&["--profile", "xc"]);
    assert_success(&output);
    let all = services(&stdout(&output));
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        vec!["db-replic", "ha-monitor"]
    );
    let monitor = &all["ha-monitor"];
    let replic = &all["db-replic"];
    for (service, block, container, command) in [
        (
            "ha-monitor",
            monitor,
            xivo_ha::monit::checks::MONITOR_CONTAINER,
            "monitor",
        ),
        (
            "db-replic",
            replic,
            xivo_ha::monit::checks::DB_REPLIC_CONTAINER,
            "db-replic",
        ),
    ] {
        // The monit checks name the containers: the names must agree.
        assert_holds(
            block,
            &[
                format!("container_name: {container}\n"),
                format!("command:\n- {command}\n"),
            ],
        );
        for line in [
            "image: xivo-ha:latest\n",
            "network_mode: host\n",
            "restart: always\n",
            "XIVO_HA_DB: host=/var/run/postgresql user=postgres dbname=asterisk\n",
            "- /etc/xivo:/etc/xivo:ro\n",
        ] {
            assert!(block.contains(line), "{service} lacks {line:?}:\n{block}");
        }
    }
    for line in [
        "- NET_RAW\n",
        "- /var/run/docker.sock:/var/run/docker.sock:rw\n",
        "- /var/lib/asterisk:/var/lib/asterisk:ro\n",
        "- /etc/asterisk:/etc/asterisk:ro\n",
        "- /root/.ssh:/root/.ssh:rw\n",
        "- /var/lib/xivo:/var/lib/xivo:rw\n",
    ] {
        assert!(
            monitor.contains(line),
            "ha-monitor lacks {line:?}:\n{monitor}"
        );
    }
    // DB Replic only with the xc profile (compose's `config` prints every service anyway).
    assert!(replic.contains("profiles:\n- xc\n"), "{replic}");
    assert!(!monitor.contains("profiles:"), "{monitor}");
    // DB Replic gets neither the Docker socket nor raw sockets nor ssh keys.
    for absent in ["docker.sock", "NET_RAW", "/root/.ssh:"] {
        assert!(
            !replic.contains(absent),
            "db-replic has {absent}:\n{replic}"
        );
    }

    // The image tag follows XIVO_HA_VERSION.
    let output = Command::new("docker-compose")
        .env("XIVO_HA_CUSTOM_ENV", repo().join("env/custom.env"))
        .env("XIVO_HA_VERSION", "9.8.7")
        .arg("-f")
        .arg(repo().join("compose/docker-compose.yml"))
        .arg("config")
        .output()
        .unwrap();
    assert!(stdout(&output).contains("image: xivo-ha:9.8.7\n"));

    // A missing settings file is refused, naming it.
    let output = Command::new("docker-compose")
        .env("XIVO_HA_CUSTOM_ENV", "/nonexistent/custom.env")
        .arg("-f")
        .arg(repo().join("compose/docker-compose.yml"))
        .arg("config")
        .output()
        .unwrap();
    assert_refused(&output, "/nonexistent/custom.env");
}

#[test]
fn xivo_service_adds_the_xc_profile_when_xc_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    // A docker compose that prints its arguments: what xivo-service would run.
    let fake = dir.path().join("fake-compose");
    std::fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let flag = dir.path().join("xc_enabled");
    let run = |action: &str| {
        Command::new(repo().join("compose/xivo-service"))
            .arg(action)
            .env("DOCKER_COMPOSE", &fake)
            .env(
                "XIVO_HA_COMPOSE_FILE",
                repo().join("compose/docker-compose.yml"),
            )
            .env("XIVO_HA_CUSTOM_ENV", repo().join("env/custom.env"))
            .env("XC_ENABLED_FLAG", &flag)
            .output()
            .unwrap()
    };
    let output = run("start");
    assert_success(&output);
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].ends_with("up -d") && !lines[0].contains("--profile"),
        "{lines:?}"
    );
    assert!(lines[0].contains("--env-file") && lines[0].contains("--project-name xivo-ha"));
    assert!(lines[1].contains("--profile xc") && lines[1].ends_with("rm --stop --force db-replic"));

    std::fs::write(&flag, "").unwrap();
    let output = run("start");
    assert_success(&output);
    assert_eq!(stdout(&output).lines().count(), 1);
    assert!(
        stdout(&output).contains("--profile xc") && stdout(&output).trim_end().ends_with("up -d")
    );

    let output = run("bogus");
    assert_eq!(output.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// The local image build

/// Removes the test's images and containers, even when the test fails.
struct DockerCleanup {
    repository: String,
    containers: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
        let version = env!("CARGO_PKG_VERSION");
        let _ = Command::new("docker")
            .args(["rmi", "-f"])
            .arg(format!("{}:{version}", self.repository))
            .arg(format!("{}:latest", self.repository))
            .output();
    }
}

#[test]
fn the_local_image_runs_the_binary_its_classic_names_rsync_and_ssh() {
    let unique = format!("xivo-ha-test-pkg-{}", std::process::id());
    let mut cleanup = DockerCleanup {
        repository: unique.clone(),
        containers: Vec::new(),
    };
    // The test binary stands in for the release one: same packaging, no second cargo build.
    let output = Command::new(repo().join("docker/build-local.sh"))
        .arg("--binary")
        .arg(xivo_ha_bin())
        .arg("--repository")
        .arg(&unique)
        .output()
        .unwrap();
    assert_success(&output);
    let version = env!("CARGO_PKG_VERSION");
    assert!(stdout(&output).contains(&format!("{unique}:{version} (also {unique}:latest)")));
    let run = |name: &str, args: &[&str]| -> Output {
        Command::new("docker")
            .args(["run", "--rm", "--network", "none", "--name", name])
            .arg(format!("{unique}:{version}"))
            .args(args)
            .output()
            .unwrap()
    };
    let mut checks: Vec<(&[&str], &str)> = vec![
        (&["xivo-ha", "--help"], "monitoring-update"),
        (
            &["xivo-monitoring-update", "--help"],
            "Regenerate monit's checks",
        ),
        (&["/usr/bin/rsync", "--version"], "rsync  version"),
        (&["/usr/bin/ssh", "-V"], "OpenSSH"),
        // The monitor's hooks run with /bin/sh -c.
        (&["/bin/sh", "-c", "echo hook ran"], "hook ran"),
        (
            &[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                "/tmp/key",
            ],
            "",
        ),
    ];
    let link_args: Vec<[&str; 2]> = xivo_ha::links::LINKS
        .iter()
        .map(|link| [link.name, "--help"])
        .collect();
    for args in &link_args {
        checks.push((args, ""));
    }
    for (i, (args, expected)) in checks.iter().enumerate() {
        let name = format!("{unique}-{i}");
        cleanup.containers.push(name.clone());
        let output = run(&name, args);
        let all = format!("{}{}", stdout(&output), stderr(&output));
        if let Some(link) = xivo_ha::links::LINKS.iter().find(|l| l.name == args[0]) {
            // A classic name runs its subcommand, whose help shows XiVO's usage.
            assert!(output.status.success(), "{args:?}: {all}");
            let usage = format!("Usage: {}", link.usage_line());
            assert!(all.contains(&usage), "{args:?}: {all}");
        } else {
            assert!(output.status.success(), "{args:?}: {all}");
            assert!(all.contains(expected), "{args:?}: {all}");
        }
    }
    // Both tags name the same image.
    let ids: Vec<String> = [version, "latest"]
        .iter()
        .map(|tag| {
            let output = Command::new("docker")
                .args(["image", "inspect", "--format", "{{.Id}}"])
                .arg(format!("{unique}:{tag}"))
                .output()
                .unwrap();
            assert_success(&output);
            stdout(&output)
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}
