//! The journal: `plan::Memory` and the operations log in one redb file
//! (`<state-dir>/journal.redb`), written before every action starts and after
//! it ends, each in one durable transaction, so a drover killed at any instant
//! restarts knowing which node it drained and which farm was mid-switch, and
//! the log's last record agrees with the memory.
//!
//! One writer: the handle drover opens holds redb's lock on the file for its
//! life (the lease of `real::lease` already keeps a second drover away; the
//! lock makes a mistake an error, not a corruption). Readers (`drover status`)
//! open it read-only beside the writer. A file that cannot be opened is never
//! written to: it holds what drover was doing when it stopped.
//!
//! The memory is stored as JSON (small, inspectable with `redb` tooling or
//! `drover status`, and the same encoding as the old `journal.json`, which is
//! imported once).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::model::Fleet;
use crate::plan::action::{Action, Outcome, Subject};
use crate::plan::memory::Memory;

/// The journal's name in the state directory.
pub const FILE: &str = "journal.redb";

/// The operations log keeps this many records; older ones are trimmed in the
/// transaction that appends.
pub const OPS_KEPT: u64 = 10_000;

/// `memory` -> the JSON of `Memory`.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// seq -> the JSON of an `OpRecord`.
const OPS: TableDefinition<u64, &[u8]> = TableDefinition::new("ops");
const MEMORY_KEY: &str = "memory";

/// What the operations log says of one action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpEvent {
    Begin,
    End,
}

/// One line of the operations log: an action began or ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Assigned by the journal when the record is written: one more than the
    /// last record's (1 for the first); never reused, even after trimming.
    pub seq: u64,
    pub at_ms: u64,
    pub event: OpEvent,
    /// `Action::describe`: names, not ids.
    pub action: String,
    /// `Kind::name` (`set_node`, `upgrade`, ...).
    pub kind: String,
    /// The node or farm it is about, by name.
    pub subject: String,
    /// For `End`: `ok` or `failed: <why>`.
    pub outcome: Option<String>,
}

impl OpRecord {
    /// The record of `action` beginning (`outcome` None) or ending. Its `seq`
    /// is set when the journal writes it.
    pub fn of(fleet: &Fleet, action: &Action, at_ms: u64, outcome: Option<&Outcome>) -> OpRecord {
        let subject = match action.subject() {
            Subject::Node(n) => fleet.nodes[n as usize].name.to_string(),
            Subject::Farm(f) => fleet.farms[f as usize].name.to_string(),
        };
        OpRecord {
            seq: 0,
            at_ms,
            event: if outcome.is_some() { OpEvent::End } else { OpEvent::Begin },
            action: action.describe(fleet),
            kind: action.kind().name().to_string(),
            subject,
            outcome: outcome.map(|o| match o {
                Outcome::Ok => "ok".to_string(),
                Outcome::Failed(e) => format!("failed: {e}"),
            }),
        }
    }
}

/// The journal file, opened on first use (`new`) or at once (`open`).
pub struct Journal {
    path: PathBuf,
    db: Mutex<Option<Database>>,
    /// `OPS_KEPT`, smaller in tests.
    ops_kept: u64,
}

/// What to tell an operator about a journal that cannot be used.
const KEEP: &str = "it holds what drover was doing when it stopped: inspect it (drover status), \
                    and move it away only when no node or farm is out of service";

fn builder() -> Builder {
    let mut b = Builder::new();
    // One writer (drover), readers beside it (drover status).
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    // A file damaged outside redb is refused, not trusted (a plain open may
    // panic on one). The journal is small: reading it whole costs little.
    b.set_check_integrity_on_open(true);
    // The journal is a few MB at most; redb's default cache is 1 GiB.
    b.set_cache_size(16 << 20);
    b
}

fn open_error(path: &Path, e: DatabaseError) -> String {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => format!(
            "the journal {} is open in another drover (or another handle of this one): \
             only one may write it; stop the other one first",
            path.display()
        ),
        DatabaseError::RepairAborted => format!(
            "the journal {} was not closed cleanly (drover stopped abruptly) and a read-only open cannot \
             recover it: the next drover reconcile will",
            path.display()
        ),
        e => format!("the journal {} cannot be opened ({e}); {KEEP}", path.display()),
    }
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("cannot {what} the journal {}: {e}", path.display())
}

/// The JSON journal of drover before the redb one, beside `path`.
/// The former JSON journal beside `path` (none when `path` itself is named so).
fn legacy_path(path: &Path) -> Option<PathBuf> {
    Some(path.with_extension("json")).filter(|l| l != path)
}

fn parse_legacy(legacy: &Path, bytes: &[u8]) -> Result<Memory, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the journal {} is not readable ({e}); {KEEP}", legacy.display()))
}

fn decode_memory(path: &Path, bytes: &[u8]) -> Result<Memory, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("the journal {} holds a memory drover cannot read ({e}); {KEEP}", path.display()))
}

impl Journal {
    /// A journal at `path`, opened (created, or imported from `journal.json`)
    /// on first use.
    pub fn new(path: &Path) -> Journal {
        Journal { path: path.to_path_buf(), db: Mutex::new(None), ops_kept: OPS_KEPT }
    }

    /// A journal at `path`, opened now: errors (a damaged file, another
    /// writer, permissions) show here.
    pub fn open(path: &Path) -> Result<Journal, String> {
        let j = Journal::new(path);
        j.with_db(|_| Ok(()))?;
        Ok(j)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, String>) -> Result<T, String> {
        let mut slot = self.db.lock().map_err(|_| io_error(&self.path, "use", "a writer panicked"))?;
        if slot.is_none() {
            *slot = Some(self.open_db()?);
        }
        f(slot.as_ref().expect("opened above"))
    }

    fn open_db(&self) -> Result<Database, String> {
        let path = &self.path;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| io_error(path, "create the directory of", e))?;
        if path.exists() {
            return builder().open(path).map_err(|e| open_error(path, e));
        }
        let legacy = legacy_path(path);
        let imported = match legacy.as_deref().map(|l| (l, fs::read(l))) {
            None => None,
            Some((_, Err(e))) if e.kind() == std::io::ErrorKind::NotFound => None,
            Some((l, Err(e))) => return Err(io_error(l, "read", e)),
            Some((l, Ok(bytes))) => Some(parse_legacy(l, &bytes)?),
        };
        // Built under another name and renamed: a crash mid-import leaves no
        // half-made journal.redb (the JSON one is still there to import).
        let fresh = path.with_extension("redb.new");
        let _ = fs::remove_file(&fresh);
        let db = builder().create(&fresh).map_err(|e| open_error(&fresh, e))?;
        write(&db, &fresh, &imported.unwrap_or_default(), None, self.ops_kept)?;
        drop(db);
        fs::rename(&fresh, path).map_err(|e| io_error(path, "create", e))?;
        if let Some(legacy) = legacy.filter(|l| l.exists()) {
            fs::rename(&legacy, legacy.with_extension("json.imported"))
                .map_err(|e| io_error(&legacy, "rename the imported", e))?;
        }
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(path, "sync the directory of", e))?;
        builder().open(path).map_err(|e| open_error(path, e))
    }

    /// The memory of the last run (fresh on a new journal).
    pub fn load(&self) -> Result<Memory, String> {
        self.with_db(|db| read_memory(db, &self.path))
    }

    /// Persists `memory` (durable when this returns).
    pub fn save(&self, memory: &Memory) -> Result<(), String> {
        self.save_with(memory, None).map(|_| ())
    }

    /// Persists `memory` and, in the same transaction, appends `op` to the
    /// operations log (trimmed to `OPS_KEPT`). Returns the record's seq.
    pub fn save_with(&self, memory: &Memory, op: Option<&OpRecord>) -> Result<Option<u64>, String> {
        self.with_db(|db| write(db, &self.path, memory, op, self.ops_kept))
    }

    /// The last `n` records of the operations log, oldest first.
    pub fn recent(&self, n: usize) -> Result<Vec<OpRecord>, String> {
        self.with_db(|db| read_ops(db, &self.path, n))
    }

    /// Reads the journal at `path` without writing it, beside a running
    /// drover (for `drover status`): its memory and last `n` log records.
    /// No journal yet: a fresh memory (or the old `journal.json`'s).
    pub fn peek(path: &Path, n: usize) -> Result<(Memory, Vec<OpRecord>), String> {
        if !path.exists() {
            let Some(legacy) = legacy_path(path) else {
                return Ok((Memory::default(), Vec::new()));
            };
            return match fs::read(&legacy) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Memory::default(), Vec::new())),
                Err(e) => Err(io_error(&legacy, "read", e)),
                Ok(bytes) => Ok((parse_legacy(&legacy, &bytes)?, Vec::new())),
            };
        }
        match builder().open_read_only(path) {
            Ok(db) => Ok((read_memory(&db, path)?, read_ops(&db, path, n)?)),
            // Left by a drover that stopped abruptly, and no writer has it
            // open now (a writer would have recovered it): recover it, as
            // the next reconcile would.
            Err(DatabaseError::RepairAborted) => {
                let db = builder().open(path).map_err(|e| open_error(path, e))?;
                Ok((read_memory(&db, path)?, read_ops(&db, path, n)?))
            }
            Err(e) => Err(open_error(path, e)),
        }
    }
}

fn read_memory(db: &impl ReadableDatabase, path: &Path) -> Result<Memory, String> {
    let fail = |e: &dyn std::fmt::Display| io_error(path, "read", e);
    let tx = db.begin_read().map_err(|e| fail(&e))?;
    let table = match tx.open_table(STATE) {
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Memory::default()),
        r => r.map_err(|e| fail(&e))?,
    };
    match table.get(MEMORY_KEY).map_err(|e| fail(&e))? {
        None => Ok(Memory::default()),
        Some(v) => decode_memory(path, v.value()),
    }
}

fn read_ops(db: &impl ReadableDatabase, path: &Path, n: usize) -> Result<Vec<OpRecord>, String> {
    let fail = |e: &dyn std::fmt::Display| io_error(path, "read the operations log of", e);
    let tx = db.begin_read().map_err(|e| fail(&e))?;
    let table = match tx.open_table(OPS) {
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        r => r.map_err(|e| fail(&e))?,
    };
    let mut out = Vec::with_capacity(n.min(OPS_KEPT as usize));
    for entry in table.iter().map_err(|e| fail(&e))?.rev().take(n) {
        let (_, v) = entry.map_err(|e| fail(&e))?;
        out.push(serde_json::from_slice(v.value()).map_err(|e| fail(&e))?);
    }
    out.reverse();
    Ok(out)
}

fn write(db: &Database, path: &Path, memory: &Memory, op: Option<&OpRecord>, kept: u64) -> Result<Option<u64>, String> {
    let fail = |e: &dyn std::fmt::Display| io_error(path, "write", e);
    let json = serde_json::to_vec(memory).map_err(|e| fail(&e))?;
    // Durability::Immediate (the default): fsync'd when commit returns.
    let tx = db.begin_write().map_err(|e| fail(&e))?;
    let mut seq = None;
    {
        tx.open_table(STATE).map_err(|e| fail(&e))?.insert(MEMORY_KEY, json.as_slice()).map_err(|e| fail(&e))?;
        let mut ops = tx.open_table(OPS).map_err(|e| fail(&e))?;
        if let Some(op) = op {
            let next = ops.last().map_err(|e| fail(&e))?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            let record = serde_json::to_vec(&OpRecord { seq: next, ..op.clone() }).map_err(|e| fail(&e))?;
            ops.insert(next, record.as_slice()).map_err(|e| fail(&e))?;
            let mut len = ops.len().map_err(|e| fail(&e))?;
            while len > kept {
                ops.pop_first().map_err(|e| fail(&e))?;
                len -= 1;
            }
            seq = Some(next);
        }
    }
    tx.commit().map_err(|e| fail(&e))?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Admin;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("drover-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn some_memory() -> Memory {
        let mut m = Memory::default();
        m.begin(&Action::SetNode { node: 3, admin: Admin::Drain }, 1000, Some(1), 100);
        m.begin(&Action::SetFarm { farm: 1, admin: Admin::Maint }, 1000, Some(1), 100);
        m.complete(&Action::SetFarm { farm: 1, admin: Admin::Maint }, &Outcome::Ok, 1200, Some(1));
        m.gate
            .insert((0, "php".into(), "8.3.14".into()), crate::plan::memory::GateRecord { since_ms: 5, passed: true });
        m
    }

    fn op(n: u64) -> OpRecord {
        OpRecord {
            seq: 0,
            at_ms: n,
            event: if n.is_multiple_of(2) { OpEvent::Begin } else { OpEvent::End },
            action: format!("action {n}"),
            kind: "set_node".into(),
            subject: format!("node{n}"),
            outcome: (!n.is_multiple_of(2)).then(|| "ok".to_string()),
        }
    }

    #[test]
    fn round_trips_memory_across_reopens() {
        let d = dir("roundtrip");
        let path = d.join("journal.redb");
        let j = Journal::new(&path);
        assert_eq!(j.load().unwrap(), Memory::default());
        let m = some_memory();
        j.save(&m).unwrap();
        assert_eq!(j.load().unwrap(), m);
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().load().unwrap(), m);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn any_file_name_works_even_the_old_json_one() {
        let d = dir("anyname");
        for name in ["journal.json", "state", "j.db"] {
            let path = d.join("sub").join(name);
            let m = some_memory();
            Journal::new(&path).save(&m).unwrap();
            assert_eq!(Journal::open(&path).unwrap().load().unwrap(), m, "{name}");
            assert_eq!(Journal::peek(&path, 0).unwrap().0, m, "{name}");
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_operations_log_is_written_with_the_memory_and_bounded() {
        let d = dir("ops");
        // The bound is smaller here: every save is a durable commit.
        const OPS_KEPT: u64 = 40;
        let j = Journal { ops_kept: OPS_KEPT, ..Journal::new(&d.join("journal.redb")) };
        let mut m = Memory::default();
        for n in 0..(OPS_KEPT + 25) {
            m.unreachable_since.insert(0, n);
            let seq = j.save_with(&m, Some(&op(n))).unwrap();
            assert_eq!(seq, Some(n + 1));
        }
        // A save without a record leaves the log alone.
        j.save(&m).unwrap();
        let all = j.recent(usize::MAX).unwrap();
        assert_eq!(all.len() as u64, OPS_KEPT, "trimmed to the bound");
        assert_eq!(all.first().unwrap().seq, 26, "the oldest records went first");
        let last3 = j.recent(3).unwrap();
        assert_eq!(last3.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![OPS_KEPT + 23, OPS_KEPT + 24, OPS_KEPT + 25]);
        assert_eq!(last3[2], OpRecord { seq: OPS_KEPT + 25, ..op(OPS_KEPT + 24) });
        // The memory and the log's last record were committed together.
        assert_eq!(j.load().unwrap().unreachable_since[&0], last3[2].at_ms);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn imports_the_json_journal_once_and_keeps_it() {
        let d = dir("import");
        let m = some_memory();
        fs::write(d.join("journal.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let j = Journal::open(&d.join("journal.redb")).unwrap();
        assert_eq!(j.load().unwrap(), m);
        assert!(!d.join("journal.json").exists());
        assert!(d.join("journal.json.imported").exists());
        assert!(!d.join("journal.redb.new").exists());
        // Later changes are the redb journal's; a stray JSON journal is not imported again.
        j.save(&Memory::default()).unwrap();
        drop(j);
        fs::write(d.join("journal.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        assert_eq!(Journal::open(&d.join("journal.redb")).unwrap().load().unwrap(), Memory::default());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unreadable_json_journal_is_not_imported_nor_touched() {
        let d = dir("badjson");
        fs::write(d.join("journal.json"), "{ not json").unwrap();
        let e = Journal::open(&d.join("journal.redb")).err().unwrap();
        assert!(e.contains("not readable") && e.contains("journal.json"), "{e}");
        assert_eq!(fs::read(d.join("journal.json")).unwrap(), b"{ not json");
        assert!(!d.join("journal.redb").exists());
        let _ = fs::remove_dir_all(&d);
    }

    /// A damaged journal is refused with its name, and left exactly as it was.
    #[test]
    fn a_damaged_journal_is_refused_and_left_untouched() {
        let d = dir("damaged");
        let good = d.join("good.redb");
        let j = Journal::open(&good).unwrap();
        for n in 0..200 {
            j.save_with(&some_memory(), Some(&op(n))).unwrap();
        }
        drop(j);
        let valid = fs::read(&good).unwrap();
        let mut flipped = valid.clone();
        for b in &mut flipped[valid.len() / 3..valid.len() / 3 + 64] {
            *b ^= 0x5a;
        }
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"this is not a database, it is a sentence".repeat(200)),
            ("json", serde_json::to_vec(&some_memory()).unwrap()),
            ("truncated", valid[..valid.len() / 2].to_vec()),
            ("header-only", valid[..4096.min(valid.len())].to_vec()),
            ("flipped", flipped),
        ];
        for (name, bytes) in cases {
            let path = d.join(format!("{name}.redb"));
            fs::write(&path, &bytes).unwrap();
            let r = std::panic::catch_unwind(|| Journal::open(&path).map(|j| j.load()));
            match r {
                Ok(Err(e)) => assert!(e.contains(&path.display().to_string()), "{name}: {e}"),
                Ok(Ok(m)) => panic!("{name}: a damaged journal opened: {m:?}"),
                Err(_) => panic!("{name}: opening a damaged journal panicked"),
            }
            assert_eq!(fs::read(&path).unwrap(), bytes, "{name}: the file was changed");
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_writer_is_refused_at_once_and_readers_see_the_writer() {
        let d = dir("twice");
        let path = d.join("journal.redb");
        let j = Journal::open(&path).unwrap();
        j.save_with(&some_memory(), Some(&op(0))).unwrap();
        let t = std::time::Instant::now();
        let e = Journal::open(&path).err().unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "refused, not waited for");
        assert!(e.contains("another drover") && e.contains("journal.redb"), "{e}");
        // drover status reads beside the writer, and sees its commits.
        let (m, ops) = Journal::peek(&path, 10).unwrap();
        assert_eq!(m, some_memory());
        assert_eq!(ops.len(), 1);
        j.save(&Memory::default()).unwrap();
        assert_eq!(Journal::peek(&path, 10).unwrap().0, Memory::default());
        drop(j);
        assert!(Journal::open(&path).is_ok(), "free again once the writer closed");
        let _ = fs::remove_dir_all(&d);
    }
}

/// Crash safety: a child process (this test binary again) saves in a loop
/// and is killed with SIGKILL at a random instant; the journal it leaves
/// holds exactly one of the memories it saved, with the log record of the
/// same transaction, and no save it had reported done is lost.
#[cfg(test)]
mod crash {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::plan::memory::{FarmOp, FarmPhase, GateRecord, NodeOp, NodePhase};

    const CHILD_ENV: &str = "DROVER_JOURNAL_CRASH_CHILD";

    /// The memory of save number `c`: every field depends on it.
    fn memory_for(c: u64) -> Memory {
        let mut m = Memory::default();
        m.unreachable_since.insert(0, c);
        for n in 0..40u32 {
            let phase = [NodePhase::Draining, NodePhase::Out, NodePhase::Upgrading][(c as usize + n as usize) % 3];
            m.node_ops
                .insert(n, NodeOp { phase, since_ms: c * 1000 + n as u64, healthy: (c + n as u64).is_multiple_of(2) });
        }
        m.farm_ops.insert(
            (c % 7) as u32,
            FarmOp {
                phase: FarmPhase::Working,
                since_ms: c,
                checked: (0..(c % 5) as u32).collect(),
                switched: !c.is_multiple_of(2),
                weight_before: 100,
            },
        );
        m.gate.insert((1, "php".into(), format!("8.3.{c}")), GateRecord { since_ms: c, passed: false });
        m
    }

    /// The child's side: runs only under `CHILD_ENV` (otherwise passes at once).
    #[test]
    fn child_saves_until_killed() {
        let Ok(path) = std::env::var(CHILD_ENV) else { return };
        let j = Journal::open(Path::new(&path)).unwrap();
        let mut c = j.load().unwrap().unreachable_since.get(&0).copied().unwrap_or(0);
        loop {
            c += 1;
            let op = OpRecord {
                seq: 0,
                at_ms: c,
                event: OpEvent::Begin,
                action: format!("save {c}"),
                kind: "test".into(),
                subject: "journal".into(),
                outcome: None,
            };
            j.save_with(&memory_for(c), Some(&op)).unwrap();
            println!("saved {c}");
        }
    }

    #[test]
    fn a_writer_killed_at_any_instant_leaves_a_saved_memory() {
        let dir = std::env::temp_dir().join(format!("drover-journal-crash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("journal.redb");
        let exe = std::env::current_exe().unwrap();
        let mut last = 0u64;
        for round in 0..6u64 {
            let mut child = Command::new(&exe)
                .args(["--exact", "real::journal::crash::child_saves_until_killed", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Read what the child reports done on a thread; kill it at a
            // random instant once it has saved at least once.
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<u64>();
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(c) = line.strip_prefix("saved ").and_then(|c| c.parse().ok()) {
                        let _ = tx.send(c);
                    }
                }
            });
            let first = rx.recv_timeout(Duration::from_secs(30)).expect("the child never saved");
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
            let wait = Duration::from_micros(u64::from(nanos) % 300_000 + round * 7_000);
            let t = Instant::now();
            while t.elapsed() < wait {
                std::hint::spin_loop();
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            reader.join().unwrap();
            let acked = rx.try_iter().last().unwrap_or(first);
            assert!(first > last, "round {round}: the child resumed from the journal ({first} after {last})");

            // As `drover status` reads it after the crash (recovers the file), then as drover does.
            let (peeked, _) = Journal::peek(&path, 1).unwrap();
            let j = Journal::open(&path).unwrap();
            let m = j.load().unwrap();
            assert_eq!(peeked, m, "round {round}: status and drover read the same memory");
            let c = m.unreachable_since[&0];
            assert_eq!(m, memory_for(c), "round {round}: a whole memory, one that was saved");
            assert!(c >= acked && c <= acked + 1, "round {round}: found save {c}, the child had reported {acked} done");
            let ops = j.recent(2).unwrap();
            let top = ops.last().unwrap();
            assert_eq!((top.seq, top.at_ms), (c, c), "round {round}: the log's last record is the memory's");
            last = c;
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
