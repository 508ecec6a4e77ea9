//! `sagas bench` as a process, short: a low fixed rate for a few seconds (no peak search)
//! on a database and topic prefix of its own; its last line parses, sagas were measured
//! and ended, and the invariants hold.

use std::time::Duration;

use sagas::bench::report::parse_line;
use tokio::process::Command;

#[tokio::test]
async fn a_short_bench_reports_its_figures_and_holds_the_invariants() {
    let (Ok(database), Ok(brokers)) = (
        std::env::var("DATABASE_URL"),
        std::env::var("KAFKA_BROKERS"),
    ) else {
        panic!("DATABASE_URL and KAFKA_BROKERS must name the services (scripts/test.sh sets them)");
    };
    let runs = std::env::temp_dir().join("sagas-bench-test");
    let run = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .args(["--database-url", &database, "--kafka-brokers", &brokers])
        .args(["bench", "--rate", "10", "--duration", "8", "--warmup", "3"])
        .args(["--raw-secs", "1", "--drain-secs", "40", "--users", "50"])
        .arg("--runs-dir")
        .arg(&runs)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(85), run)
        .await
        .expect("the bench did not end within 85 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    let lines: Vec<&str> = stdout.lines().collect();
    let last = parse_line(lines.last().copied().unwrap_or_default())
        .unwrap_or_else(|| panic!("the last line is not a bench line:\n{stdout}"));
    let number = |key: &str| -> f64 {
        last.get(key)
            .unwrap_or_else(|| panic!("no {key} in the last line:\n{stdout}"))
            .parse()
            .unwrap_or_else(|e| panic!("{key} is not a number ({e}):\n{stdout}"))
    };
    assert_eq!(last["invariants"], "ok", "{stdout}");
    assert!(number("raw_commits_per_s") > 0.0, "{stdout}");
    assert!(number("peak_sagas_per_s") > 0.0, "{stdout}");
    assert!(number("p50_ms") > 0.0, "{stdout}");
    assert!(number("p99_ms") >= number("p50_ms"), "{stdout}");
    assert!(number("rss_start_mb") > 0.0, "{stdout}");
    let ratio = number("peak_sagas_per_s") / number("raw_commits_per_s");
    assert!((number("ratio") - ratio).abs() < 1e-3, "{stdout}");

    let counts = lines
        .iter()
        .rev()
        .skip(1)
        .find_map(|line| parse_line(line))
        .unwrap_or_else(|| panic!("no counts line before the last:\n{stdout}"));
    let sagas: usize = counts["sagas"].parse().unwrap();
    let completed: usize = counts["completed"].parse().unwrap();
    // 8 s at 10/s: 80 measured sagas, 70% of them complete in the demo's mix.
    assert_eq!(sagas, 80, "{stdout}");
    assert!(completed > 0 && completed < sagas, "{stdout}");
    assert_eq!(counts["stuck"], "0", "{stdout}");
    assert!(
        counts["wal_bytes_per_saga"].parse::<f64>().unwrap() > 0.0,
        "{stdout}"
    );
}
