//! The journal: `plan::Memory` and the operations log in one redb file
//! (`<state-dir>/journal.redb`), written before every action starts and after
//! it ends, each in one durable transaction, so a drover killed at any instant
//! restarts knowing which node it drained and which farm was mid-switch, and
//! the log's last record agrees with the memory.
//!
//! One writer: the handle drover opens holds redb's lock on the file for its
//! life (the lease of `control::lease` already keeps a second drover away; the
//! lock makes a mistake an error, not a corruption). Readers (`drover status`)
//! open it read-only beside the writer. A file that cannot be opened is never
//! written to: it holds what drover was doing when it stopped.
//!
//! The memory is stored as JSON by stable identity (`plan::named::Named`:
//! sites, farms and nodes by name, a node also by address, profiles by name),
//! never by position in the spec: a restart on a spec whose farms or nodes
//! were reordered, renamed, removed or added ties every entry to its own
//! object, and reports (`Resolution`) what it cannot carry over. The format
//! is versioned (`FORMAT`, in the `meta` table). Format 1 (no `meta`: the
//! memory keyed by position, as in the old `journal.json`, which is imported
//! once) is migrated on open by what the file really holds: the operations
//! log names each action's subject and its instant, which is also when a
//! window's phase began, so an entry is tied to the object the log names;
//! one the log cannot tie to exactly one object is reported, never guessed.

use std::collections::{BTreeMap, BTreeSet};
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
use crate::plan::memory::{FarmPhase, Memory, NodePhase};
use crate::plan::named::{Entry, Named, NamedFarm, NamedFarmOp, NamedNode, Reason, Resolution};

/// The journal's name in the state directory.
pub const FILE: &str = "journal.redb";

/// The operations log keeps this many records; older ones are trimmed in the
/// transaction that appends.
pub const OPS_KEPT: u64 = 10_000;

/// The journal format this drover writes: 2, the memory by identity.
/// 1 (no `meta` table) is the memory by position.
pub const FORMAT: u64 = 2;

/// `format` -> `FORMAT` (absent in format 1).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
/// `named` -> the JSON of `Named` (format 2); `memory` -> the JSON of the
/// position-keyed `Memory` (format 1, removed when migrated).
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const NAMED_KEY: &str = "named";
const MEMORY_KEY: &str = "memory";
/// seq -> the JSON of an `OpRecord`.
const OPS: TableDefinition<u64, &[u8]> = TableDefinition::new("ops");
/// seq -> the JSON of a `Resolved`: what each open or new spec could not
/// carry over, kept for `drover status` (bounded like the log).
const RESOLVED: TableDefinition<u64, &[u8]> = TableDefinition::new("resolved");
/// The resolutions kept.
pub const RESOLVED_KEPT: u64 = 1_000;

/// A `Resolution` as recorded: when, and on which occasion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub at_ms: u64,
    /// `open` (a restart on the spec in force) or `new spec`.
    pub on: String,
    #[serde(flatten)]
    pub resolution: Resolution,
}

/// The journal read for a fleet: the memory tied to it, and what could not be.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    pub memory: Memory,
    /// Entries not carried over (not yet recorded: the first save records them).
    pub resolutions: Vec<Resolution>,
    /// The format the file was in (`FORMAT`, or 1 before its migration).
    pub format: u64,
}

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

impl Journal {
    /// A journal at `path`, opened (created, or imported from `journal.json`)
    /// on first use.
    pub fn new(path: &Path) -> Journal {
        Journal { path: path.to_path_buf(), db: Mutex::new(None), ops_kept: OPS_KEPT }
    }

    /// A journal at `path`, opened now: errors (a damaged file, another
    /// writer, permissions, a newer format) show here.
    pub fn open(path: &Path) -> Result<Journal, String> {
        let j = Journal::new(path);
        j.with_db(|db| read_stored(db, path).map(|_| ()))?;
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
        match &imported {
            // The JSON journal is keyed by position: imported as format 1,
            // migrated (and its entries reported) when first loaded.
            Some(m) => write_format1(&db, &fresh, m)?,
            None => write(&db, &fresh, &Named::default(), None, &[], self.ops_kept).map(|_| ())?,
        };
        drop(db);
        fs::rename(&fresh, path).map_err(|e| io_error(path, "create", e))?;
        if let Some(legacy) = legacy.filter(|l| l.exists()) {
            fs::rename(&legacy, legacy.with_extension("json.imported"))
                .map_err(|e| io_error(&legacy, "rename the imported", e))?;
        }
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(path, "sync the directory of", e))?;
        builder().open(path).map_err(|e| open_error(path, e))
    }

    /// The memory of the last run for `fleet` (fresh on a new journal): each
    /// entry tied to its object by identity, the rest reported.
    pub fn load(&self, fleet: &Fleet) -> Result<Loaded, String> {
        self.with_db(|db| load_from(db, &self.path, fleet))
    }

    /// Persists `memory` of `fleet` (durable when this returns).
    pub fn save(&self, memory: &Memory, fleet: &Fleet) -> Result<(), String> {
        self.save_with(memory, fleet, None).map(|_| ())
    }

    /// Persists `memory` of `fleet` and, in the same transaction, appends
    /// `op` to the operations log (trimmed to `OPS_KEPT`). Returns the
    /// record's seq.
    pub fn save_with(&self, memory: &Memory, fleet: &Fleet, op: Option<&OpRecord>) -> Result<Option<u64>, String> {
        let named = Named::of(memory, fleet);
        self.with_db(|db| write(db, &self.path, &named, op, &[], self.ops_kept))
    }

    /// Persists `memory` of `fleet` with the resolutions that made it (an
    /// open, a new spec), in one transaction: from then on the journal holds
    /// both, and `drover status` shows them.
    pub fn save_resolved(&self, memory: &Memory, fleet: &Fleet, resolved: &[Resolved]) -> Result<(), String> {
        let named = Named::of(memory, fleet);
        self.with_db(|db| write(db, &self.path, &named, None, resolved, self.ops_kept).map(|_| ()))
    }

    /// The last `n` records of the operations log, oldest first.
    pub fn recent(&self, n: usize) -> Result<Vec<OpRecord>, String> {
        self.with_db(|db| read_ops(db, &self.path, n))
    }

    /// The actions the log shows begun and not ended (in flight when the
    /// writer stopped, or now), oldest first.
    pub fn unfinished(&self) -> Result<Vec<OpRecord>, String> {
        let ops = self.recent(usize::MAX)?;
        let mut open: Vec<OpRecord> = Vec::new();
        for r in ops {
            match r.event {
                OpEvent::Begin => open.push(r),
                OpEvent::End => open.retain(|b| b.action != r.action),
            }
        }
        Ok(open)
    }

    /// The last `n` resolutions recorded, oldest first.
    pub fn resolutions(&self, n: usize) -> Result<Vec<Resolved>, String> {
        self.with_db(|db| read_seq(db, RESOLVED, &self.path, n))
    }

    /// Reads the journal at `path` for `fleet` without writing it, beside a
    /// running drover (for `drover status`): its memory, its last `n` log
    /// records and resolutions. No journal yet: a fresh memory (or the old
    /// `journal.json`'s, migrated).
    pub fn peek(path: &Path, n: usize, fleet: &Fleet) -> Result<Peek, String> {
        if !path.exists() {
            let Some(legacy) = legacy_path(path) else {
                return Ok(Peek::default());
            };
            return match fs::read(&legacy) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Peek::default()),
                Err(e) => Err(io_error(&legacy, "read", e)),
                Ok(bytes) => {
                    let loaded = resolve_stored(Stored::Position(parse_legacy(&legacy, &bytes)?), &[], fleet);
                    Ok(Peek { loaded, ..Peek::default() })
                }
            };
        }
        let read = |db: &Database| -> Result<Peek, String> {
            Ok(Peek {
                loaded: load_from(db, path, fleet)?,
                ops: read_ops(db, path, n)?,
                resolved: read_seq(db, RESOLVED, path, n)?,
            })
        };
        match builder().open_read_only(path) {
            Ok(db) => Ok(Peek {
                loaded: load_from(&db, path, fleet)?,
                ops: read_ops(&db, path, n)?,
                resolved: read_seq(&db, RESOLVED, path, n)?,
            }),
            // Left by a drover that stopped abruptly, and no writer has it
            // open now (a writer would have recovered it): recover it, as
            // the next reconcile would.
            Err(DatabaseError::RepairAborted) => read(&builder().open(path).map_err(|e| open_error(path, e))?),
            Err(e) => Err(open_error(path, e)),
        }
    }
}

/// The journal as `drover status` reads it.
#[derive(Clone, Debug, Default)]
pub struct Peek {
    /// The memory tied to the fleet, and what could not be (not recorded
    /// yet: the next reconcile records it).
    pub loaded: Loaded,
    pub ops: Vec<OpRecord>,
    /// The resolutions recorded by earlier opens and new specs.
    pub resolved: Vec<Resolved>,
}

impl Peek {
    /// Every resolution to show: the recorded ones, then those the next
    /// reconcile will record.
    pub fn resolution_lines(&self) -> Vec<String> {
        self.resolved
            .iter()
            .map(|r| format!("{} ({} at {}): {}", r.resolution.object, r.on, r.at_ms, r.resolution))
            .chain(self.loaded.resolutions.iter().map(|r| format!("{r} (on the next reconcile)")))
            .collect()
    }
}

/// What the file holds, in its format.
enum Stored {
    Named(Named),
    /// Format 1: keyed by position in a spec the file does not name.
    Position(Memory),
}

fn read_stored(db: &impl ReadableDatabase, path: &Path) -> Result<Stored, String> {
    let fail = |e: &dyn std::fmt::Display| io_error(path, "read", e);
    let tx = db.begin_read().map_err(|e| fail(&e))?;
    let format = match tx.open_table(META) {
        Err(redb::TableError::TableDoesNotExist(_)) => 1,
        r => r.map_err(|e| fail(&e))?.get(FORMAT_KEY).map_err(|e| fail(&e))?.map(|v| v.value()).unwrap_or(1),
    };
    if format > FORMAT {
        return Err(format!(
            "the journal {} is in format {format}, written by a newer drover (this one reads up to {FORMAT}); {KEEP}",
            path.display()
        ));
    }
    let table = match tx.open_table(STATE) {
        Err(redb::TableError::TableDoesNotExist(_)) if format == 1 => return Ok(Stored::Position(Memory::default())),
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Stored::Named(Named::default())),
        r => r.map_err(|e| fail(&e))?,
    };
    let undecodable = |e: serde_json::Error| {
        format!("the journal {} holds a memory drover cannot read ({e}); {KEEP}", path.display())
    };
    if format == 1 {
        return match table.get(MEMORY_KEY).map_err(|e| fail(&e))? {
            None => Ok(Stored::Position(Memory::default())),
            Some(v) => serde_json::from_slice(v.value()).map(Stored::Position).map_err(undecodable),
        };
    }
    match table.get(NAMED_KEY).map_err(|e| fail(&e))? {
        None => Ok(Stored::Named(Named::default())),
        Some(v) => serde_json::from_slice(v.value()).map(Stored::Named).map_err(undecodable),
    }
}

fn load_from(db: &impl ReadableDatabase, path: &Path, fleet: &Fleet) -> Result<Loaded, String> {
    let stored = read_stored(db, path)?;
    let ops = match &stored {
        Stored::Position(_) => read_ops(db, path, usize::MAX)?,
        Stored::Named(_) => Vec::new(),
    };
    Ok(resolve_stored(stored, &ops, fleet))
}

fn resolve_stored(stored: Stored, ops: &[OpRecord], fleet: &Fleet) -> Loaded {
    match stored {
        Stored::Named(named) => {
            let (memory, resolutions) = named.resolve(fleet);
            Loaded { memory, resolutions, format: FORMAT }
        }
        Stored::Position(old) => {
            let (named, mut resolutions) = migrate(&old, ops, fleet);
            let (memory, more) = named.resolve(fleet);
            resolutions.extend(more);
            Loaded { memory, resolutions, format: 1 }
        }
    }
}

fn read_ops(db: &impl ReadableDatabase, path: &Path, n: usize) -> Result<Vec<OpRecord>, String> {
    read_seq(db, OPS, path, n)
}

fn read_seq<T: serde::de::DeserializeOwned>(
    db: &impl ReadableDatabase,
    table: TableDefinition<u64, &[u8]>,
    path: &Path,
    n: usize,
) -> Result<Vec<T>, String> {
    let fail = |e: &dyn std::fmt::Display| io_error(path, "read the operations log of", e);
    let tx = db.begin_read().map_err(|e| fail(&e))?;
    let table = match tx.open_table(table) {
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

/// Appends `value` to a sequence table, trimmed to `kept`; its seq.
fn append<T: Serialize>(
    table: &mut redb::Table<'_, u64, &[u8]>,
    value: impl FnOnce(u64) -> T,
    kept: u64,
    fail: &dyn Fn(&dyn std::fmt::Display) -> String,
) -> Result<u64, String> {
    let next = table.last().map_err(|e| fail(&e))?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    let record = serde_json::to_vec(&value(next)).map_err(|e| fail(&e))?;
    table.insert(next, record.as_slice()).map_err(|e| fail(&e))?;
    let mut len = table.len().map_err(|e| fail(&e))?;
    while len > kept {
        table.pop_first().map_err(|e| fail(&e))?;
        len -= 1;
    }
    Ok(next)
}

/// Writes the memory (format `FORMAT`), and appends `op` and `resolved`, in
/// one durable transaction. Returns the op's seq.
fn write(
    db: &Database,
    path: &Path,
    named: &Named,
    op: Option<&OpRecord>,
    resolved: &[Resolved],
    kept: u64,
) -> Result<Option<u64>, String> {
    let fail = |e: &dyn std::fmt::Display| io_error(path, "write", e);
    let json = serde_json::to_vec(named).map_err(|e| fail(&e))?;
    // Durability::Immediate (the default): fsync'd when commit returns.
    let tx = db.begin_write().map_err(|e| fail(&e))?;
    let mut seq = None;
    {
        tx.open_table(META).map_err(|e| fail(&e))?.insert(FORMAT_KEY, FORMAT).map_err(|e| fail(&e))?;
        let mut state = tx.open_table(STATE).map_err(|e| fail(&e))?;
        state.insert(NAMED_KEY, json.as_slice()).map_err(|e| fail(&e))?;
        // Migrated: the position-keyed memory goes in the same transaction.
        state.remove(MEMORY_KEY).map_err(|e| fail(&e))?;
        let mut ops = tx.open_table(OPS).map_err(|e| fail(&e))?;
        if let Some(op) = op {
            seq = Some(append(&mut ops, |next| OpRecord { seq: next, ..op.clone() }, kept, &fail)?);
        }
        if !resolved.is_empty() {
            let mut table = tx.open_table(RESOLVED).map_err(|e| fail(&e))?;
            for r in resolved {
                append(&mut table, |_| r.clone(), RESOLVED_KEPT, &fail)?;
            }
        }
    }
    tx.commit().map_err(|e| fail(&e))?;
    Ok(seq)
}

/// A format 1 file (no `meta`, the memory by position): how the JSON
/// journal is imported, and how tests build an old journal.
fn write_format1(db: &Database, path: &Path, memory: &Memory) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| io_error(path, "write", e);
    let json = serde_json::to_vec(memory).map_err(|e| fail(&e))?;
    let tx = db.begin_write().map_err(|e| fail(&e))?;
    tx.open_table(STATE).map_err(|e| fail(&e))?.insert(MEMORY_KEY, json.as_slice()).map_err(|e| fail(&e))?;
    tx.open_table(OPS).map_err(|e| fail(&e))?;
    tx.commit().map_err(|e| fail(&e))
}

// ---- migration of format 1 ----------------------------------------------

/// The names the log could mean, per entry, and whether a later record
/// closed the window (then that name is not a candidate).
fn candidates(ops: &[OpRecord], at: impl Fn(&OpRecord) -> bool, closes: impl Fn(&OpRecord) -> bool) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for (i, r) in ops.iter().enumerate() {
        if at(r) && !ops[i + 1..].iter().any(|l| l.subject == r.subject && closes(l)) {
            out.insert(r.subject.clone());
        }
    }
    out.into_iter().collect()
}

/// Ties entries (old key, content, candidate names) to names: a group of
/// entries with the same candidates is tied when it has exactly as many
/// entries as candidates, all alike (so which gets which does not matter),
/// and no other group could mean those names. Returns (key, name) tied and
/// (key, candidates) not.
#[allow(clippy::type_complexity)]
fn tie<C: PartialEq>(entries: Vec<(u32, C, Vec<String>)>) -> (Vec<(u32, String)>, Vec<(u32, Vec<String>)>) {
    let mut groups: BTreeMap<Vec<String>, Vec<(u32, C)>> = BTreeMap::new();
    for (k, c, cands) in entries {
        groups.entry(cands).or_default().push((k, c));
    }
    let mut claims: BTreeMap<&str, usize> = BTreeMap::new();
    for cands in groups.keys() {
        for c in cands {
            *claims.entry(c.as_str()).or_default() += 1;
        }
    }
    let (mut tied, mut untied) = (Vec::new(), Vec::new());
    for (cands, group) in &groups {
        let alike = group.iter().all(|(_, c)| *c == group[0].1);
        let exclusive = cands.iter().all(|c| claims[c.as_str()] == 1);
        if !cands.is_empty() && group.len() == cands.len() && alike && exclusive {
            tied.extend(group.iter().map(|(k, _)| *k).zip(cands.iter().cloned()));
        } else {
            untied.extend(group.iter().map(|(k, _)| (*k, cands.clone())));
        }
    }
    (tied, untied)
}

fn ended(r: &OpRecord, kind: &str) -> bool {
    r.event == OpEvent::End && r.kind == kind
}

fn failed(r: &OpRecord) -> Option<&str> {
    r.outcome.as_deref().and_then(|o| o.strip_prefix("failed: "))
}

/// A format 1 memory by identity, from what the file holds: each entry is
/// tied to the object its operations log names (the records of the instant
/// its phase began, or of the failure it records), not to whatever is at
/// its position in today's spec. An entry the log does not tie to exactly
/// one object, and gate evidence (keyed by a profile position the log never
/// names), are reported. Unreachable-since times are observed again.
fn migrate(old: &Memory, ops: &[OpRecord], fleet: &Fleet) -> (Named, Vec<Resolution>) {
    let mut out = Vec::new();
    let mut named = Named::default();
    let node_ref = |name: &str| {
        let n = fleet.nodes.iter().find(|n| n.name == name)?;
        Some(crate::plan::named::NodeRef {
            site: fleet.sites[n.site as usize].name.clone(),
            farm: fleet.farms[n.farm as usize].name.clone(),
            name: n.name.clone(),
            address: n.address.clone(),
        })
    };
    let farm_ref = |name: &str| {
        let f = fleet.farms.iter().find(|f| f.name == name)?;
        Some(crate::plan::named::FarmRef { site: fleet.sites[f.site as usize].name.clone(), name: f.name.clone() })
    };
    let position = |what: &str, k: u32| format!("{what} at position {k} of the former journal");

    // Node windows: the phase began with the record of that instant.
    let node_closes = |l: &OpRecord| {
        (ended(l, "set_node") && l.action.ends_with(": lb ready") && l.outcome.as_deref() == Some("ok"))
            || ended(l, "mark_failed")
            || (["upgrade", "activate", "health_check"].contains(&l.kind.as_str()) && failed(l).is_some())
    };
    let node_windows = old
        .node_ops
        .iter()
        .map(|(&n, op)| {
            let (kind, suffix) = match op.phase {
                NodePhase::Draining => ("set_node", Some(": lb drain")),
                NodePhase::Out => ("set_node", Some(": lb maint")),
                NodePhase::Returning => ("set_node", Some(": lb ready")),
                NodePhase::Upgrading => ("upgrade", None),
                NodePhase::Checking => ("health_check", None),
            };
            let at = |r: &OpRecord| {
                r.event == OpEvent::Begin
                    && r.at_ms == op.since_ms
                    && r.kind == kind
                    && suffix.is_none_or(|s| r.action.ends_with(s))
            };
            (n, op.clone(), candidates(ops, at, node_closes))
        })
        .collect();
    let (tied, untied) = tie(node_windows);
    let mut nodes: BTreeMap<String, NamedNode> = BTreeMap::new();
    for (k, name) in tied {
        let op = old.node_ops[&k].clone();
        match node_ref(&name) {
            Some(r) => nodes.entry(name).or_insert_with(|| NamedNode::new(r)).op = Some(op),
            None => {
                out.push(Resolution::new(format!("node {name}"), Entry::NodeWindow { phase: op.phase }, Reason::Gone))
            }
        }
    }
    for (k, cands) in untied {
        let phase = old.node_ops[&k].phase;
        out.push(Resolution::new(
            position("node", k),
            Entry::NodeWindow { phase },
            Reason::Untied { candidates: cands },
        ));
    }

    // Failed nodes: the record of the failure says which node.
    let failures = old
        .failed_nodes
        .iter()
        .map(|(&n, why)| {
            let at = |r: &OpRecord| {
                r.event == OpEvent::End
                    && ((r.kind == "mark_failed" && r.action.ends_with(&format!("mark failed ({why})")))
                        || failed(r).is_some_and(|e| *why == format!("{}: {e}", r.kind)))
            };
            (n, why.clone(), candidates(ops, at, |_| false))
        })
        .collect();
    let (tied, untied) = tie(failures);
    for (k, name) in tied {
        let why = old.failed_nodes[&k].clone();
        match node_ref(&name) {
            Some(r) => nodes.entry(name).or_insert_with(|| NamedNode::new(r)).failed = Some(why),
            None => out.push(Resolution::new(format!("node {name}"), Entry::FailedNode { reason: why }, Reason::Gone)),
        }
    }
    for (k, cands) in untied {
        let reason = old.failed_nodes[&k].clone();
        out.push(Resolution::new(
            position("node", k),
            Entry::FailedNode { reason },
            Reason::Untied { candidates: cands },
        ));
    }
    named.nodes = nodes.into_values().collect();

    // Farm switches: the phase began with the record of that instant.
    let farm_closes =
        |l: &OpRecord| ended(l, "set_farm") && l.action.ends_with(": lb ready") && l.outcome.as_deref() == Some("ok");
    let switches = old
        .farm_ops
        .iter()
        .map(|(&f, op)| {
            let at = |r: &OpRecord| {
                r.at_ms == op.since_ms
                    && match op.phase {
                        FarmPhase::Leaving => {
                            r.event == OpEvent::Begin && r.kind == "set_farm" && r.action.ends_with(": lb maint")
                        }
                        FarmPhase::Returning => {
                            r.event == OpEvent::Begin && r.kind == "set_farm" && r.action.ends_with(": lb ready")
                        }
                        FarmPhase::Flushing => r.event == OpEvent::Begin && r.kind == "flush_cache",
                        FarmPhase::Working => ended(r, "flush_cache") && r.outcome.as_deref() == Some("ok"),
                        FarmPhase::Aborting => ended(r, "flush_cache") && failed(r).is_some(),
                    }
            };
            // Checked nodes are positions too: they are health-checked again.
            let content = (op.phase, op.since_ms, op.switched, op.weight_before);
            (f, content, candidates(ops, at, farm_closes))
        })
        .collect();
    let (tied, untied) = tie(switches);
    let mut farms: BTreeMap<String, NamedFarm> = BTreeMap::new();
    for (k, name) in tied {
        let op = &old.farm_ops[&k];
        match farm_ref(&name) {
            Some(r) => {
                farms.entry(name).or_insert(NamedFarm { farm: r, op: None, failed: None }).op = Some(NamedFarmOp {
                    phase: op.phase,
                    since_ms: op.since_ms,
                    checked: BTreeSet::new(),
                    switched: op.switched,
                    weight_before: op.weight_before,
                    warmed: BTreeSet::new(),
                    snapshots: Default::default(),
                })
            }
            None => out.push(Resolution::new(
                format!("farm {name}"),
                Entry::FarmSwitch { phase: op.phase, switched: op.switched },
                Reason::Gone,
            )),
        }
    }
    for (k, cands) in untied {
        let op = &old.farm_ops[&k];
        out.push(Resolution::new(
            position("farm", k),
            Entry::FarmSwitch { phase: op.phase, switched: op.switched },
            Reason::Untied { candidates: cands },
        ));
    }

    // Failed farms: a failed flush names its farm.
    let failures = old
        .failed_farms
        .iter()
        .map(|(&f, why)| {
            let at = |r: &OpRecord| {
                ended(r, "flush_cache") && failed(r).is_some_and(|e| *why == format!("memcached flush failed: {e}"))
            };
            (f, why.clone(), candidates(ops, at, |_| false))
        })
        .collect();
    let (tied, untied) = tie(failures);
    for (k, name) in tied {
        let why = old.failed_farms[&k].clone();
        match farm_ref(&name) {
            Some(r) => farms.entry(name).or_insert(NamedFarm { farm: r, op: None, failed: None }).failed = Some(why),
            None => out.push(Resolution::new(format!("farm {name}"), Entry::FailedFarm { reason: why }, Reason::Gone)),
        }
    }
    for (k, cands) in untied {
        let reason = old.failed_farms[&k].clone();
        out.push(Resolution::new(
            position("farm", k),
            Entry::FailedFarm { reason },
            Reason::Untied { candidates: cands },
        ));
    }
    named.farms = farms.into_values().collect();

    if !old.gate.is_empty() {
        out.push(Resolution::new(
            "the preproduction gate",
            Entry::GateEvidence { records: old.gate.len() },
            Reason::Untied { candidates: Vec::new() },
        ));
    }
    (named, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Admin;

    /// The fleet the test memories are of (48 nodes, 8 farms, 2 profiles).
    pub(super) fn test_fleet() -> Fleet {
        crate::sim::fleetgen::fleet(&crate::sim::fleetgen::Shape { nodes_per_farm: 6, ..Default::default() }).unwrap()
    }

    /// `m` as it comes back from the journal: in-flight subjects are not kept.
    fn stored(m: &Memory) -> Memory {
        Memory { in_flight: Default::default(), ..m.clone() }
    }

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
        let f = test_fleet();
        let d = dir("roundtrip");
        let path = d.join("journal.redb");
        let j = Journal::new(&path);
        assert_eq!(j.load(&f).unwrap().memory, Memory::default());
        let m = some_memory();
        j.save(&m, &f).unwrap();
        assert_eq!(j.load(&f).unwrap().memory, stored(&m));
        drop(j);
        assert_eq!(
            Journal::open(&path).unwrap().load(&f).unwrap(),
            Loaded { memory: stored(&m), resolutions: vec![], format: FORMAT }
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn any_file_name_works_even_the_old_json_one() {
        let f = test_fleet();
        let d = dir("anyname");
        for name in ["journal.json", "state", "j.db"] {
            let path = d.join("sub").join(name);
            let m = some_memory();
            Journal::new(&path).save(&m, &f).unwrap();
            assert_eq!(Journal::open(&path).unwrap().load(&f).unwrap().memory, stored(&m), "{name}");
            assert_eq!(Journal::peek(&path, 0, &f).unwrap().loaded.memory, stored(&m), "{name}");
        }
        let _ = fs::remove_dir_all(&d);
    }

    fn node(f: &Fleet, name: &str) -> u32 {
        f.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}")) as u32
    }
    fn farm(f: &Fleet, name: &str) -> u32 {
        f.farms.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no farm {name}")) as u32
    }

    /// The spec with farms `a` and `b` listed the other way round: every
    /// object keeps its name and address, their positions swap.
    fn swap_farms(f: &Fleet, a: &str, b: &str) -> Fleet {
        let mut g = f.clone();
        let (fa, fb) = (farm(f, a) as usize, farm(f, b) as usize);
        g.farms.swap(fa, fb);
        // Positions stay; what sits at them is the other farm's.
        let (na, nb) = (f.farms[fa].nodes.clone(), f.farms[fb].nodes.clone());
        for (x, y) in na.iter().zip(nb.iter()) {
            g.nodes.swap(*x as usize, *y as usize);
        }
        for (x, y) in na.iter().zip(nb.iter()) {
            g.nodes[*x as usize].farm = fa as u32;
            g.nodes[*y as usize].farm = fb as u32;
        }
        g.farms[fa].nodes = na;
        g.farms[fb].nodes = nb;
        g
    }

    /// A restart on a spec whose farms were reordered, a node renamed,
    /// another given a new address, another moved farm: every entry lands
    /// on its own object or is reported; none lands on another object.
    #[test]
    fn entries_follow_their_objects_across_reorder_rename_readdress_and_move() {
        let f = test_fleet();
        let d = dir("respec");
        let path = d.join("journal.redb");
        let mut m = Memory::default();
        let switching = farm(&f, "s0-f0");
        m.farm_ops.insert(
            switching,
            crate::plan::memory::FarmOp {
                phase: FarmPhase::Working,
                since_ms: 7,
                checked: [node(&f, "s0-f0-n001")].into(),
                switched: true,
                weight_before: 100,
                warmed: Default::default(),
                snapshots: Default::default(),
            },
        );
        let op = |phase| crate::plan::memory::NodeOp { phase, since_ms: 9, healthy: false, snapshot: None };
        m.node_ops.insert(node(&f, "s0-f1-n002"), op(NodePhase::Draining));
        m.node_ops.insert(node(&f, "s1-f0-n001"), op(NodePhase::Out));
        m.node_ops.insert(node(&f, "s1-f1-n001"), op(NodePhase::Upgrading));
        m.node_ops.insert(node(&f, "s1-f2-n001"), op(NodePhase::Checking));
        m.failed_nodes.insert(node(&f, "s0-f1-n003"), "upgrade: emerge exited 1".into());
        m.unreachable_since.insert(node(&f, "s0-f1-n004"), 3);
        Journal::new(&path).save(&m, &f).unwrap();

        let mut g = swap_farms(&f, "s0-f0", "s0-f1");
        let renamed = node(&g, "s1-f0-n001");
        g.nodes[renamed as usize].name = "s1-f0-web1".into();
        let readdressed = node(&g, "s1-f1-n001");
        g.nodes[readdressed as usize].address = "10.99.0.1".into();
        // s1-f2-n001 and s1-f0-n002 trade farms (each takes the other's place).
        let (x, y) = (node(&g, "s1-f2-n001"), node(&g, "s1-f0-n002"));
        g.nodes[x as usize].name = "s1-f0-n002".into();
        g.nodes[y as usize].name = "s1-f2-n001".into();

        let loaded = Journal::open(&path).unwrap().load(&g).unwrap();
        let got = &loaded.memory;
        // The switch follows its farm to its new position, with its checks.
        assert_eq!(got.farm_ops.keys().copied().collect::<Vec<_>>(), vec![farm(&g, "s0-f0")]);
        assert_ne!(farm(&g, "s0-f0"), switching, "the farms did change places");
        assert_eq!(got.farm_ops[&farm(&g, "s0-f0")].checked, [node(&g, "s0-f0-n001")].into());
        // The drained node and the failed one are the same objects; the
        // node at the drained one's former position is untouched.
        assert_eq!(got.node_ops.keys().copied().collect::<Vec<_>>(), vec![node(&g, "s0-f1-n002")]);
        assert_eq!(got.failed_nodes.keys().copied().collect::<Vec<_>>(), vec![node(&g, "s0-f1-n003")]);
        assert_eq!(got.unreachable_since.keys().copied().collect::<Vec<_>>(), vec![node(&g, "s0-f1-n004")]);
        // The rest is reported, each with its reason.
        let mut why: Vec<(String, Reason)> = loaded
            .resolutions
            .iter()
            .map(|r| (r.object.split(' ').nth(1).unwrap().to_string(), r.reason.clone()))
            .collect();
        why.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            why,
            vec![
                ("s1-f0-n001".to_string(), Reason::Gone),
                ("s1-f1-n001".to_string(), Reason::AddressChanged { to: "10.99.0.1".into() }),
                ("s1-f2-n001".to_string(), Reason::MovedFarm { to: "s1/s1-f0".into() }),
            ],
            "{:#?}",
            loaded.resolutions
        );
        assert!(loaded.resolutions.iter().all(|r| matches!(r.entry, Entry::NodeWindow { .. })));
        let _ = fs::remove_dir_all(&d);
    }

    /// Farms and nodes removed (and added back) between a save and an open:
    /// what is gone is reported, never a panic, and the planner runs on the
    /// smaller fleet.
    #[test]
    fn a_smaller_fleet_reports_what_is_gone_and_plans_without_a_panic() {
        let big = test_fleet();
        let small = crate::sim::fleetgen::fleet(&crate::sim::fleetgen::Shape {
            nodes_per_farm: 3,
            farms_per_site: 2,
            capacity_floor: 0.3,
            ..Default::default()
        })
        .unwrap();
        let d = dir("smaller");
        let path = d.join("journal.redb");
        let mut m = Memory::default();
        let last = big.nodes.len() as u32 - 1;
        m.node_ops.insert(
            node(&big, "s1-f2-n006"),
            crate::plan::memory::NodeOp { phase: NodePhase::Draining, since_ms: 1, healthy: false, snapshot: None },
        );
        m.node_ops.insert(
            node(&big, "s0-f0-n001"),
            crate::plan::memory::NodeOp { phase: NodePhase::Out, since_ms: 1, healthy: false, snapshot: None },
        );
        m.failed_nodes.insert(last, "unreachable for 300s".into());
        m.farm_ops.insert(
            farm(&big, "s0-f2"),
            crate::plan::memory::FarmOp {
                phase: FarmPhase::Leaving,
                since_ms: 1,
                checked: Default::default(),
                switched: false,
                weight_before: 100,
                warmed: Default::default(),
                snapshots: Default::default(),
            },
        );
        let j = Journal::new(&path);
        j.save(&m, &big).unwrap();
        let loaded = j.load(&small).unwrap();
        assert_eq!(loaded.memory.node_ops.keys().copied().collect::<Vec<_>>(), vec![node(&small, "s0-f0-n001")]);
        assert!(loaded.memory.farm_ops.is_empty() && loaded.memory.failed_nodes.is_empty());
        let gone: Vec<&str> = loaded.resolutions.iter().map(|r| r.object.as_str()).collect();
        assert_eq!(loaded.resolutions.len(), 3, "{gone:?}");
        assert!(loaded.resolutions.iter().all(|r| r.reason == Reason::Gone), "{:?}", loaded.resolutions);
        assert!(gone.iter().any(|o| o.starts_with("farm s0/s0-f2")), "{gone:?}");
        // The planner, even given the memory of the big fleet as it stood
        // (positions past the small fleet's end), does not panic.
        let observed = crate::sim::Sim::new(&small, crate::sim::SimConfig::new(&small, 1)).observe();
        let est = crate::plan::Estimates::default();
        let w =
            crate::plan::World { fleet: &small, observed: &observed, memory: &m, now_ms: 1_000_000, estimates: &est };
        let pass = crate::plan::plan(&w);
        assert!(!pass.converged);
        // Added back: the entries that were gone stay closed, nothing returns.
        j.save(&loaded.memory, &small).unwrap();
        let again = j.load(&big).unwrap();
        assert_eq!(again.memory.node_ops.keys().copied().collect::<Vec<_>>(), vec![node(&big, "s0-f0-n001")]);
        assert!(again.resolutions.is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    /// A journal of the former format (memory by position, no `meta`)
    /// with its operations log, written as the former drover wrote it.
    fn format1(path: &Path, m: &Memory, ops: &[OpRecord]) {
        let db = builder().create(path).unwrap();
        write_format1(&db, path, m).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(OPS).unwrap();
            for (i, r) in ops.iter().enumerate() {
                let r = OpRecord { seq: i as u64 + 1, ..r.clone() };
                t.insert(r.seq, serde_json::to_vec(&r).unwrap().as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }

    fn rec(at_ms: u64, event: OpEvent, kind: &str, subject: &str, action: &str, outcome: Option<&str>) -> OpRecord {
        OpRecord {
            seq: 0,
            at_ms,
            event,
            action: format!("{subject}: {action}"),
            kind: kind.into(),
            subject: subject.into(),
            outcome: outcome.map(str::to_string),
        }
    }

    /// The former format migrated by what the file holds: each entry goes
    /// to the object its operations log names, whatever sits at its old
    /// position in today's spec; what the log cannot tie is reported.
    #[test]
    fn a_former_journal_is_migrated_by_its_log_not_by_position() {
        let f = test_fleet();
        let d = dir("format1");
        let path = d.join("journal.redb");
        let op = |phase, since_ms| crate::plan::memory::NodeOp { phase, since_ms, healthy: false, snapshot: None };
        let mut m = Memory::default();
        m.farm_ops.insert(
            farm(&f, "s0-f1"),
            crate::plan::memory::FarmOp {
                phase: FarmPhase::Working,
                since_ms: 50,
                checked: [node(&f, "s0-f1-n001")].into(),
                switched: true,
                weight_before: 100,
                warmed: Default::default(),
                snapshots: Default::default(),
            },
        );
        m.node_ops.insert(node(&f, "s1-f0-n002"), op(NodePhase::Draining, 60));
        m.node_ops.insert(node(&f, "s1-f1-n001"), op(NodePhase::Out, 70));
        m.node_ops.insert(node(&f, "s1-f1-n002"), op(NodePhase::Out, 70));
        m.node_ops.insert(node(&f, "s1-f2-n001"), op(NodePhase::Draining, 80));
        m.node_ops.insert(node(&f, "s1-f2-n002"), op(NodePhase::Draining, 90));
        m.failed_nodes.insert(node(&f, "s0-f0-n003"), "upgrade: boom".into());
        m.gate
            .insert((1, "php".into(), "8.3.14".into()), crate::plan::memory::GateRecord { since_ms: 5, passed: true });
        use OpEvent::{Begin, End};
        let ops = vec![
            rec(40, Begin, "set_farm", "s0-f1", "lb maint", None),
            rec(45, Begin, "flush_cache", "s0-f1", "flush memcached", None),
            rec(50, End, "flush_cache", "s0-f1", "flush memcached", Some("ok")),
            rec(55, End, "upgrade", "s0-f0-n003", "upgrade", Some("failed: boom")),
            rec(60, Begin, "set_node", "s1-f0-n002", "lb drain", None),
            rec(70, Begin, "set_node", "s1-f1-n001", "lb maint", None),
            rec(70, Begin, "set_node", "s1-f1-n002", "lb maint", None),
            // Two nodes drained at 80, one of them still open: which one
            // the log cannot say.
            rec(80, Begin, "set_node", "s1-f2-n001", "lb drain", None),
            rec(80, Begin, "set_node", "s1-f2-n003", "lb drain", None),
            // A window the log says was closed: its name is no candidate.
            rec(90, Begin, "set_node", "s1-f2-n004", "lb drain", None),
            rec(95, End, "set_node", "s1-f2-n004", "lb ready", Some("ok")),
        ];
        format1(&path, &m, &ops);
        // Today's spec lists s0's first two farms the other way round.
        let g = swap_farms(&f, "s0-f0", "s0-f1");
        let j = Journal::open(&path).unwrap();
        let loaded = j.load(&g).unwrap();
        assert_eq!(loaded.format, 1);
        let got = &loaded.memory;
        assert_eq!(got.farm_ops.keys().copied().collect::<Vec<_>>(), vec![farm(&g, "s0-f1")]);
        assert!(got.farm_ops[&farm(&g, "s0-f1")].switched);
        let names = |ids: Vec<u32>| ids.into_iter().map(|n| g.nodes[n as usize].name.clone()).collect::<Vec<_>>();
        let mut windows = names(got.node_ops.keys().copied().collect());
        windows.sort();
        assert_eq!(windows, ["s1-f0-n002", "s1-f1-n001", "s1-f1-n002"]);
        assert_eq!(names(got.failed_nodes.keys().copied().collect()), ["s0-f0-n003"]);
        // Reported: the ambiguous window, the one with no record, the gate.
        let mut reported: Vec<(String, Reason)> =
            loaded.resolutions.iter().map(|r| (r.object.clone(), r.reason.clone())).collect();
        reported.sort_by(|a, b| a.0.cmp(&b.0));
        let at = |n: &str| format!("node at position {} of the former journal", node(&f, n));
        let mut want = vec![
            (at("s1-f2-n001"), Reason::Untied { candidates: vec!["s1-f2-n001".into(), "s1-f2-n003".into()] }),
            (at("s1-f2-n002"), Reason::Untied { candidates: vec![] }),
            ("the preproduction gate".to_string(), Reason::Untied { candidates: vec![] }),
        ];
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(reported, want);
        // Saved once, the journal is in the new format and holds the same.
        j.save(&loaded.memory, &g).unwrap();
        let again = j.load(&g).unwrap();
        assert_eq!((again.format, &again.memory, again.resolutions.len()), (FORMAT, &loaded.memory, 0));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_journal_of_a_newer_format_is_refused_and_left_untouched() {
        let d = dir("newer");
        let path = d.join("journal.redb");
        let db = builder().create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META).unwrap().insert(FORMAT_KEY, FORMAT + 1).unwrap();
        tx.commit().unwrap();
        drop(db);
        let e = Journal::open(&path).err().unwrap();
        assert!(e.contains("newer drover") && e.contains("journal.redb"), "{e}");
        // Refused for status as for a writer, and still refused: nothing was migrated down.
        assert!(Journal::peek(&path, 0, &test_fleet()).is_err());
        assert!(Journal::open(&path).is_err());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_operations_log_is_written_with_the_memory_and_bounded() {
        let f = test_fleet();
        let d = dir("ops");
        // The bound is smaller here: every save is a durable commit.
        const OPS_KEPT: u64 = 40;
        let j = Journal { ops_kept: OPS_KEPT, ..Journal::new(&d.join("journal.redb")) };
        let mut m = Memory::default();
        for n in 0..(OPS_KEPT + 25) {
            m.unreachable_since.insert(0, n);
            let seq = j.save_with(&m, &f, Some(&op(n))).unwrap();
            assert_eq!(seq, Some(n + 1));
        }
        // A save without a record leaves the log alone.
        j.save(&m, &f).unwrap();
        let all = j.recent(usize::MAX).unwrap();
        assert_eq!(all.len() as u64, OPS_KEPT, "trimmed to the bound");
        assert_eq!(all.first().unwrap().seq, 26, "the oldest records went first");
        let last3 = j.recent(3).unwrap();
        assert_eq!(last3.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![OPS_KEPT + 23, OPS_KEPT + 24, OPS_KEPT + 25]);
        assert_eq!(last3[2], OpRecord { seq: OPS_KEPT + 25, ..op(OPS_KEPT + 24) });
        // The memory and the log's last record were committed together.
        assert_eq!(j.load(&f).unwrap().memory.unreachable_since[&0], last3[2].at_ms);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn imports_the_json_journal_once_and_keeps_it() {
        let f = test_fleet();
        let d = dir("import");
        let m = some_memory();
        fs::write(d.join("journal.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let j = Journal::open(&d.join("journal.redb")).unwrap();
        // The JSON journal is keyed by position and has no operations log:
        // nothing in it can be tied to an object, so nothing is applied, and
        // every entry is reported.
        let loaded = j.load(&f).unwrap();
        assert_eq!((loaded.memory, loaded.format), (Memory::default(), 1));
        let untied = |r: &Resolution| matches!(&r.reason, Reason::Untied { candidates } if candidates.is_empty());
        assert!(loaded.resolutions.iter().all(untied), "{:?}", loaded.resolutions);
        let entries: Vec<&Entry> = loaded.resolutions.iter().map(|r| &r.entry).collect();
        assert_eq!(
            entries,
            [
                &Entry::NodeWindow { phase: NodePhase::Draining },
                &Entry::FarmSwitch { phase: FarmPhase::Leaving, switched: false },
                &Entry::GateEvidence { records: 1 }
            ]
        );
        assert!(!d.join("journal.json").exists());
        assert!(d.join("journal.json.imported").exists());
        assert!(!d.join("journal.redb.new").exists());
        // Later changes are the redb journal's; a stray JSON journal is not imported again.
        j.save(&Memory::default(), &f).unwrap();
        drop(j);
        fs::write(d.join("journal.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        assert_eq!(Journal::open(&d.join("journal.redb")).unwrap().load(&f).unwrap().memory, Memory::default());
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
        let f = test_fleet();
        let d = dir("damaged");
        let good = d.join("good.redb");
        let j = Journal::open(&good).unwrap();
        for n in 0..200 {
            j.save_with(&some_memory(), &f, Some(&op(n))).unwrap();
        }
        drop(j);
        let valid = fs::read(&good).unwrap();
        let mut flipped = valid.clone();
        for at in [valid.len() / 4, valid.len() / 3, valid.len() / 2, valid.len() * 3 / 4] {
            for b in &mut flipped[at..at + 64] {
                *b ^= 0x5a;
            }
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
            let r = std::panic::catch_unwind(|| Journal::open(&path).map(|j| j.load(&f)));
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
        let f = test_fleet();
        let d = dir("twice");
        let path = d.join("journal.redb");
        let j = Journal::open(&path).unwrap();
        j.save_with(&some_memory(), &f, Some(&op(0))).unwrap();
        let t = std::time::Instant::now();
        let e = Journal::open(&path).err().unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "refused, not waited for");
        assert!(e.contains("another drover") && e.contains("journal.redb"), "{e}");
        // drover status reads beside the writer, and sees its commits.
        let p = Journal::peek(&path, 10, &f).unwrap();
        let (m, ops) = (p.loaded.memory, p.ops);
        assert_eq!(m, stored(&some_memory()));
        assert_eq!(ops.len(), 1);
        j.save(&Memory::default(), &f).unwrap();
        assert_eq!(Journal::peek(&path, 10, &f).unwrap().loaded.memory, Memory::default());
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

    use super::tests::test_fleet;
    use super::*;
    use crate::plan::memory::{FarmOp, FarmPhase, GateRecord, NodeOp, NodePhase};

    const CHILD_ENV: &str = "DROVER_JOURNAL_CRASH_CHILD";

    /// The memory of save number `c`: every field depends on it.
    fn memory_for(c: u64) -> Memory {
        let fleet = super::tests::test_fleet();
        let mut m = Memory::default();
        m.unreachable_since.insert(0, c);
        for n in 0..40u32 {
            let phase = [NodePhase::Draining, NodePhase::Out, NodePhase::Upgrading][(c as usize + n as usize) % 3];
            m.node_ops.insert(
                n,
                NodeOp {
                    phase,
                    since_ms: c * 1000 + n as u64,
                    healthy: (c + n as u64).is_multiple_of(2),
                    snapshot: None,
                },
            );
        }
        m.farm_ops.insert(
            (c % 7) as u32,
            FarmOp {
                phase: FarmPhase::Working,
                since_ms: c,
                checked: fleet.farms[(c % 7) as usize].nodes.iter().copied().take((c % 5) as usize).collect(),
                switched: !c.is_multiple_of(2),
                weight_before: 100,
                warmed: Default::default(),
                snapshots: Default::default(),
            },
        );
        m.gate.insert((1, "php".into(), format!("8.3.{c}")), GateRecord { since_ms: c, passed: false });
        m
    }

    /// The child's side: runs only under `CHILD_ENV` (otherwise passes at once).
    #[test]
    fn child_saves_until_killed() {
        let f = test_fleet();
        let Ok(path) = std::env::var(CHILD_ENV) else { return };
        let j = Journal::open(Path::new(&path)).unwrap();
        let mut c = j.load(&f).unwrap().memory.unreachable_since.get(&0).copied().unwrap_or(0);
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
            j.save_with(&memory_for(c), &f, Some(&op)).unwrap();
            println!("saved {c}");
        }
    }

    #[test]
    fn a_writer_killed_at_any_instant_leaves_a_saved_memory() {
        let f = test_fleet();
        let dir = std::env::temp_dir().join(format!("drover-journal-crash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("journal.redb");
        let exe = std::env::current_exe().unwrap();
        let mut last = 0u64;
        for round in 0..6u64 {
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "control::journal::crash::child_saves_until_killed",
                    "--nocapture",
                    "--test-threads=1",
                ])
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
            let peeked = Journal::peek(&path, 1, &f).unwrap().loaded.memory;
            let j = Journal::open(&path).unwrap();
            let m = j.load(&f).unwrap().memory;
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
