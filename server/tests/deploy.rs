//! What can be checked of the deploy files without Docker: the compose file parses,
//! builds Parley from the repository's Dockerfile, mounts only files that are in the
//! repository, and gives Parley only settings it has, in forms it reads.

use std::{collections::BTreeMap, path::PathBuf};

use server::config::Config;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `deploy/compose.yaml` with its anchors merged.
fn compose() -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo("deploy/compose.yaml")).unwrap();
    let mut value: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml is YAML");
    value.apply_merge().unwrap();
    value
}

/// `${NAME}` in compose values, filled from `deploy/.env.example`.
fn with_example_env(text: &str) -> String {
    let example = std::fs::read_to_string(repo("deploy/.env.example")).unwrap();
    let mut filled = text.to_string();
    for line in example.lines().filter(|line| !line.starts_with('#')) {
        if let Some((name, value)) = line.split_once('=') {
            filled = filled.replace(&format!("${{{name}}}"), value);
        }
    }
    assert!(!filled.contains("${"), "every variable is in .env.example: {filled}");
    filled
}

#[test]
fn compose_builds_parley_from_the_repository_and_mounts_only_its_files() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    let parley_nodes: Vec<&str> = services.keys().filter_map(|key| key.as_str()).filter(|name| name.starts_with("parley-")).collect();
    assert!(parley_nodes.len() >= 2, "two or more nodes");
    const IMAGES: [&str; 5] = ["postgres:", "redis:", "nginx:", "prom/prometheus:", "grafana/grafana:"];
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if name.starts_with("parley-") {
            assert_eq!(service["build"]["dockerfile"].as_str(), Some("deploy/Dockerfile"));
            assert!(repo(service["build"]["dockerfile"].as_str().unwrap()).is_file());
        } else {
            let image = service["image"].as_str().unwrap_or_else(|| panic!("{name} names an image"));
            assert!(IMAGES.iter().any(|known| image.starts_with(known)), "{name}: unexpected image {image}");
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            // ./certs is the operator's own (the README says what goes there).
            if let Some(relative) = source.strip_prefix("./").filter(|path| *path != "certs") {
                assert!(repo(&format!("deploy/{relative}")).exists(), "{name} mounts deploy/{relative}, which is not in the repository");
            }
        }
    }
}

#[test]
fn every_setting_compose_gives_parley_is_one_it_reads() {
    let compose = compose();
    let environment = compose["services"]["parley-1"]["environment"].as_mapping().unwrap().clone();
    let variables: BTreeMap<String, String> = environment
        .iter()
        .map(|(key, value)| {
            let value = match value {
                serde_yaml::Value::String(text) => text.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            };
            (key.as_str().unwrap().to_string(), with_example_env(&value))
        })
        .collect();
    figment::Jail::expect_with(|jail| {
        jail.set_env("PARLEY_CONFIG", "no-such-file.toml");
        for (name, value) in &variables {
            jail.set_env(name, value);
        }
        // Unknown keys are refused (`deny_unknown_fields`), so this fails on a typo.
        let config = Config::load().map_err(|err| err.to_string())?;
        assert_eq!(config.cluster.redis_url, "redis://redis:6379");
        assert_eq!(config.cluster.node_name, "parley-1");
        assert!(config.database_url().starts_with("postgres://parley:"));
        assert_eq!(config.security.allowed_origins, ["https://chat.example.org"]);
        assert!(config.security.trust_forwarded_for && config.session.secure_cookie);
        Ok(())
    });
}

#[test]
fn the_dockerfile_copies_only_what_exists() {
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|line| line.starts_with("COPY ") && !line.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &parts[..parts.len() - 1] {
            assert!(*source == "." || repo(source).exists(), "the Dockerfile copies {source}, which is not in the repository");
        }
    }
    assert!(dockerfile.contains("USER parley"), "the runtime image does not run as root");
}
