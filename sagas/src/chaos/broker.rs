//! The run's own Kafka broker: tansu on a port of its own, its SQLite storage in the run
//! directory, so acknowledged messages survive a `kill -9` and restart (its in-memory
//! storage loses them; see the README's fault harness section).

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::processes::ProcessSpec;

/// The storage file, relative to the run directory (tansu resolves the path against its
/// working directory, so the broker is started there).
pub const STORAGE_FILE: &str = "tansu.db";

/// The `tansu` executable: `explicit` when given, else the one on `PATH`, else
/// `~/.cargo/bin/tansu` (where `scripts/services.sh` installs it).
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"));
    let cargo_bin =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/tansu"));
    on_path
        .chain(cargo_bin)
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no `tansu` binary on PATH or in ~/.cargo/bin: run `bash scripts/services.sh` \
                 (it installs it) or pass --tansu PATH"
            )
        })
}

/// Where a broker of a run keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// In memory: fastest, lost when the broker stops (and see the Kafka notes on its
    /// defects when consumers restart).
    Memory,
    /// SQLite, in the run directory ([`STORAGE_FILE`]): survives a restart.
    Sqlite,
}

/// How to start the broker listening on `addr`, storing in `run_dir` with SQLite.
pub fn spec(tansu: &Path, addr: SocketAddr, run_dir: &Path) -> ProcessSpec {
    spec_with(tansu, addr, run_dir, Storage::Sqlite)
}

/// How to start the broker listening on `addr` with `storage` (SQLite's file in `run_dir`).
pub fn spec_with(tansu: &Path, addr: SocketAddr, run_dir: &Path, storage: Storage) -> ProcessSpec {
    let url = format!("tcp://{addr}");
    let storage = match storage {
        Storage::Memory => "memory://tansu/".to_string(),
        Storage::Sqlite => format!("sqlite://{STORAGE_FILE}"),
    };
    ProcessSpec {
        program: tansu.to_path_buf(),
        args: vec![
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            storage,
        ],
        cwd: Some(run_dir.to_path_buf()),
        env: vec![],
        log: run_dir.join("broker.log"),
    }
}

/// The index tansu 0.6's SQLite schema lacks: record headers are looked up by
/// `(topition, offset_id)`, and without it every fetch of a record with headers scans the
/// whole `header` table. The broker's cost per request then grows with what it stores, until
/// (about six minutes into a full run) it spends a core on table scans and its group
/// coordinator and produce requests time out: consumer groups stay in their joining phase and
/// nothing is consumed.
const HEADER_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS header_record ON header (topition, offset_id)";

/// Adds [`HEADER_INDEX`] to the broker's storage in `run_dir`, once the broker has created
/// its tables (it does so when it starts); waits up to `within` for them.
pub async fn index_headers(run_dir: &Path, within: Duration) -> anyhow::Result<()> {
    let path = run_dir.join(STORAGE_FILE);
    let deadline = Instant::now() + within;
    loop {
        let attempt = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> rusqlite::Result<()> {
                let storage = rusqlite::Connection::open(&path)?;
                storage.busy_timeout(Duration::from_secs(5))?;
                storage.execute_batch(HEADER_INDEX)
            }
        })
        .await?;
        match attempt {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                return Err(anyhow::anyhow!(
                    "cannot index the broker's header table in {}: {error}",
                    path.display()
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether something accepts connections at `addr`.
pub async fn answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// Waits until the broker at `addr` accepts connections, up to `within`.
pub async fn wait_until_up(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !answers(addr).await {
        if Instant::now() >= deadline {
            anyhow::bail!("the broker at {addr} did not come up within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Watches the broker's log for a panic. tansu 0.6 can panic in its storage task (seen
/// after quick successive restarts: `more or less than one row` in its idempotent-producer
/// check); the process keeps accepting connections but answers every request with an
/// error, so only a restart brings it back.
#[derive(Debug)]
pub struct PanicWatch {
    log: PathBuf,
    read_up_to: u64,
    /// The end of the last chunk, so a marker split across two reads is still found.
    tail: String,
}

/// What a panic looks like in the broker's log.
const PANIC_MARKER: &str = "panicked at";

impl PanicWatch {
    /// Watches `log` from its current end.
    pub fn new(log: &Path) -> Self {
        let read_up_to = std::fs::metadata(log).map_or(0, |m| m.len());
        PanicWatch {
            log: log.to_path_buf(),
            read_up_to,
            tail: String::new(),
        }
    }

    /// Whether the broker logged a panic since the last call (or since [`PanicWatch::new`]).
    pub fn panicked(&mut self) -> bool {
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return false;
        };
        let mut fresh = Vec::new();
        if file.seek(SeekFrom::Start(self.read_up_to)).is_err()
            || file.read_to_end(&mut fresh).is_err()
        {
            return false;
        }
        self.read_up_to += fresh.len() as u64;
        let text = format!("{}{}", self.tail, String::from_utf8_lossy(&fresh));
        let found = text.contains(PANIC_MARKER);
        // Short enough never to hold the whole marker, long enough to hold all but its end.
        let keep = text.len().saturating_sub(PANIC_MARKER.len() - 1);
        self.tail = text
            .char_indices()
            .find(|(i, _)| *i >= keep)
            .map_or(String::new(), |(i, _)| text[i..].to_string());
        found
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[tokio::test]
    async fn the_header_table_is_indexed_once_the_broker_has_made_it() {
        let dir = std::env::temp_dir().join(format!("broker-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = index_headers(&dir, Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("no such table"),
            "before the broker made its tables: {missing:?}"
        );
        let storage = rusqlite::Connection::open(dir.join(STORAGE_FILE)).unwrap();
        storage
            .execute_batch("CREATE TABLE header (topition integer, offset_id integer, k blob)")
            .unwrap();
        index_headers(&dir, Duration::from_secs(5)).await.unwrap();
        index_headers(&dir, Duration::from_secs(5)).await.unwrap();
        let indexes: String = storage
            .query_row(
                "SELECT group_concat(name) FROM sqlite_master WHERE type = 'index'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(indexes, "header_record");
        let plan: String = storage
            .query_row(
                "EXPLAIN QUERY PLAN SELECT k FROM header WHERE topition = 1 AND offset_id = 2",
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("USING INDEX header_record"), "{plan}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_panic_in_the_broker_log_is_noticed_once_even_across_reads() {
        let log = std::env::temp_dir().join(format!("broker-{}.log", uuid::Uuid::new_v4()));
        std::fs::write(&log, "thread 'x' panicked at an earlier run\n").unwrap();
        let mut watch = PanicWatch::new(&log);
        assert!(!watch.panicked(), "what was there before is not news");
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        write!(file, "ready in 20ms\nthread 'tokio-rt-worker' pani").unwrap();
        assert!(!watch.panicked());
        writeln!(file, "cked at tansu-storage/src/lite.rs:503:13").unwrap();
        assert!(watch.panicked());
        assert!(!watch.panicked(), "the same panic counts once");
        std::fs::remove_file(&log).unwrap();
    }

    #[test]
    fn the_broker_stores_in_sqlite_in_the_run_directory_on_its_own_port() {
        let spec = spec(
            Path::new("/bin/tansu"),
            "127.0.0.1:19092".parse().unwrap(),
            Path::new("/tmp/run"),
        );
        assert_eq!(spec.cwd.as_deref(), Some(Path::new("/tmp/run")));
        let args = spec.args.join(" ");
        assert!(
            args.contains("--listener-url tcp://127.0.0.1:19092"),
            "{args}"
        );
        assert!(
            args.contains("--storage-engine sqlite://tansu.db"),
            "{args}"
        );
    }
}
