//! Every route of the OpenAPI document, fuzzed by schemathesis (from PyPI, in the venv
//! `scripts/test.sh` creates) against a real engine schema: no input gets a 5xx.

use std::path::PathBuf;
use std::process::Stdio;

use integration_tests::checkout::CheckoutWorld;
use saga_admin::{AdminSettings, AdminToken};
use saga_core::SagaStatus;
use tokio::process::Command;

const TOKEN: &str = "fuzz-token";

/// The schemathesis the scripts install, if it is there.
fn schemathesis() -> Option<PathBuf> {
    let path = match std::env::var_os("SCHEMATHESIS") {
        Some(path) => PathBuf::from(path),
        None => {
            let state = std::env::var_os("SAGA_SERVICES_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".local/state/saga-services")
                });
            state.join("venv/bin/schemathesis")
        }
    };
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "no schemathesis at {}; scripts/test.sh installs it into a venv",
        path.display()
    );
    assert!(
        std::env::var_os("SAGA_TESTS_REQUIRE_TOOLS").is_none(),
        "{message}"
    );
    eprintln!("SKIPPED: {message}");
    None
}

#[tokio::test]
async fn fuzzing_every_documented_route_never_gets_a_server_error() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let mut world = CheckoutWorld::running(true).await;
    let request = world.request(1_000, 5, "WELCOME");
    world.trigger(&request).await;
    world
        .wait_for_status(world.saga_id(&request), SagaStatus::Completed)
        .await;
    let api = world
        .serve_admin(AdminSettings {
            token: Some(AdminToken::new(TOKEN)),
            ..AdminSettings::default()
        })
        .await;

    let output = Command::new(schemathesis)
        .arg("run")
        .arg(format!("{api}/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "50", "--seed", "7", "--workers", "2"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .args(["--request-timeout", "10"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found server errors:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Enough cases reached the API, and every one passed.
    let cases = stdout
        .lines()
        .find_map(|l| l.trim().strip_suffix(" passed")?.split_once(" generated, "))
        .map(|(generated, passed)| (generated.to_string(), passed.to_string()))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert_eq!(cases.0, cases.1, "{stdout}");
    assert!(cases.0.parse::<u32>().unwrap() >= 300, "{stdout}");
    world.shutdown().await;
}
