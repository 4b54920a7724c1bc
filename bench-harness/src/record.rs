//! Recordings (`occam bench --record DIR`) and their replay (`occam replay DIR`).
//!
//! A recording holds, per workload, everything needed to re-check a run with an independent
//! implementation, as JSON Lines (one JSON object per line):
//!
//! - `DIR/<workload>/manifest.json` — settings, the genesis root, every block's root, the final root;
//! - `DIR/<workload>/genesis.jsonl` — `{"key": HEX, "value": HEX}` per genesis entry, sorted by key;
//! - `DIR/<workload>/blocks.jsonl` — `{"height": N, "txs": [...], "outputs": [...], "state_root": HEX}`;
//! - `DIR/<workload>/final_state.jsonl` — the state after the last block, like genesis.
//!
//! `RECORDING.md` at the repository root is the normative spec of the format. A recording
//! always holds the sequential reference run of the single engine, whatever executors the bench
//! compares; runs of the sharded engine or of signed transactions are refused
//! ([`check_recordable`]).

use crate::runner::{BenchConfig, Calibration};
use crate::workload::Workload;
use occam_engine::exec::executor_by_name;
use occam_engine::key::Key;
use occam_engine::native::{NativeOutput, NativeTx, NativeVm};
use occam_engine::state::CommittedState;
use occam_engine::value::Value;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Version tag of recordings.
pub const RECORDING_SCHEMA: &str = "occam-recording/v1";

/// Longest line accepted when reading a recording (a block of 4M transactions fits).
pub const LINE_MAX_BYTES: usize = 1 << 30;

/// `manifest.json` of one recorded workload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always [`RECORDING_SCHEMA`].
    pub schema: String,
    /// Workload name.
    pub workload: String,
    /// Settings of the run.
    pub settings: BenchConfig,
    /// Emulated-cost calibration.
    pub calibration: Calibration,
    /// Root of the genesis state.
    pub genesis_root: String,
    /// Root after each block.
    pub block_roots: Vec<String>,
    /// Root after the last block.
    pub final_root: String,
}

/// One line of `genesis.jsonl` / `final_state.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EntryLine {
    /// Key, 64 hex digits.
    pub key: String,
    /// Value, hex.
    pub value: Value,
}

/// One line of `blocks.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlockLine {
    /// Block height (0-based, warm-up blocks included).
    pub height: usize,
    /// The transactions.
    pub txs: Vec<NativeTx>,
    /// Their outputs.
    pub outputs: Vec<NativeOutput>,
    /// State root after the block.
    pub state_root: String,
}

/// Problems reading or checking a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// A file could not be read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        err: std::io::Error,
    },
    /// A line is not valid JSON of the expected shape.
    #[error("{path}:{line}: {msg}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Re-execution disagrees with the recording.
    #[error("{0}")]
    Mismatch(String),
    /// No manifest found.
    #[error("{0}: no manifest.json here or in any subfolder")]
    NotARecording(PathBuf),
    /// A run that a recording cannot hold.
    #[error("--record cannot record a run with {option}: {why}; record the workload without {option} (see RECORDING.md)")]
    Unsupported {
        /// The command-line option that makes the run unrecordable.
        option: &'static str,
        /// What a recording would miss.
        why: &'static str,
    },
}

/// Checks that a bench run can be recorded: a recording holds the sequential run of unsigned
/// transactions on the single engine, so runs of the sharded engine (`--shards`) and of
/// signed transactions (`--verify-signatures`) are refused before anything runs.
pub fn check_recordable(sharded: bool, signed: bool) -> Result<(), RecordingError> {
    if sharded {
        return Err(RecordingError::Unsupported {
            option: "--shards",
            why: "a recording holds the single engine's sequential run, not the sharded engine's serial order",
        });
    }
    if signed {
        return Err(RecordingError::Unsupported {
            option: "--verify-signatures",
            why: "a recording holds unsigned transactions, without their signatures and nonces",
        });
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |err| RecordingError::Io { path: path.to_path_buf(), err }
}

fn write_entries(path: &Path, entries: &[(Key, Value)]) -> Result<(), RecordingError> {
    let mut w = BufWriter::new(File::create(path).map_err(io(path))?);
    for (k, v) in entries {
        let line = serde_json::to_string(&EntryLine { key: k.to_hex(), value: v.clone() }).expect("entry serialises");
        writeln!(w, "{line}").map_err(io(path))?;
    }
    w.flush().map_err(io(path))
}

/// Writes one workload's recording while the reference run executes.
pub struct Recorder {
    dir: PathBuf,
    blocks: BufWriter<File>,
    manifest: Manifest,
}

impl Recorder {
    /// Starts `root/<workload>/` with the manifest header and the genesis.
    pub fn create(
        root: &Path,
        workload: &Workload,
        cfg: &BenchConfig,
        calibration: &Calibration,
        genesis: &CommittedState,
    ) -> Result<Recorder, RecordingError> {
        let dir = root.join(workload.to_string().replace(':', "-"));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_entries(&dir.join("genesis.jsonl"), &genesis.sorted_entries())?;
        let path = dir.join("blocks.jsonl");
        let blocks = BufWriter::new(File::create(&path).map_err(io(&path))?);
        let manifest = Manifest {
            schema: RECORDING_SCHEMA.into(),
            workload: workload.to_string(),
            settings: cfg.clone(),
            calibration: calibration.clone(),
            genesis_root: genesis.root().to_hex(),
            block_roots: Vec::new(),
            final_root: String::new(),
        };
        Ok(Recorder { dir, blocks, manifest })
    }

    /// Appends one block.
    pub fn block(&mut self, height: usize, txs: &[NativeTx], outputs: &[NativeOutput], root: &str) -> Result<(), RecordingError> {
        #[derive(Serialize)]
        struct Line<'a> {
            height: usize,
            txs: &'a [NativeTx],
            outputs: &'a [NativeOutput],
            state_root: &'a str,
        }
        let path = self.dir.join("blocks.jsonl");
        serde_json::to_writer(&mut self.blocks, &Line { height, txs, outputs, state_root: root })
            .map_err(|e| RecordingError::Io { path: path.clone(), err: e.into() })?;
        self.blocks.write_all(b"\n").map_err(io(&path))?;
        self.manifest.block_roots.push(root.to_string());
        Ok(())
    }

    /// Writes the final state and the manifest.
    pub fn finish(mut self, state: &CommittedState) -> Result<(), RecordingError> {
        let path = self.dir.join("blocks.jsonl");
        self.blocks.flush().map_err(io(&path))?;
        write_entries(&self.dir.join("final_state.jsonl"), &state.sorted_entries())?;
        self.manifest.final_root = state.root().to_hex();
        let path = self.dir.join("manifest.json");
        let json = serde_json::to_string_pretty(&self.manifest).expect("manifest serialises");
        std::fs::write(&path, json).map_err(io(&path))
    }
}

/// Reads a JSON Lines file, calling `f` with each parsed line.
fn read_lines<T: for<'de> Deserialize<'de>>(
    path: &Path,
    mut f: impl FnMut(usize, T) -> Result<(), RecordingError>,
) -> Result<(), RecordingError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = Read::take(&mut reader, LINE_MAX_BYTES as u64 + 1).read_line(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if n > LINE_MAX_BYTES {
            return Err(RecordingError::Malformed { path: path.into(), line, msg: format!("line longer than {LINE_MAX_BYTES} bytes") });
        }
        if buf.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(&buf).map_err(|e| RecordingError::Malformed { path: path.into(), line, msg: e.to_string() })?;
        f(line, v)?;
    }
}

fn read_state(path: &Path) -> Result<CommittedState, RecordingError> {
    let mut entries = Vec::new();
    read_lines(path, |line, e: EntryLine| {
        let key = Key::from_hex(&e.key).ok_or_else(|| RecordingError::Malformed {
            path: path.into(),
            line,
            msg: "key is not 64 hex digits".into(),
        })?;
        entries.push((key, e.value));
        Ok(())
    })?;
    Ok(CommittedState::from_entries(entries))
}

/// The result of replaying one recorded workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Workload name.
    pub workload: String,
    /// Blocks re-executed.
    pub blocks: usize,
    /// Transactions re-executed.
    pub txs: usize,
    /// The final root, equal to the recorded one.
    pub final_root: String,
}

/// Re-executes every recording under `dir` (a workload folder or a folder of them) with the
/// named executor, checking every block's outputs and root and the final state.
pub fn replay(dir: &Path, executor: &str, threads: usize) -> Result<Vec<ReplaySummary>, RecordingError> {
    let mut dirs = Vec::new();
    if dir.join("manifest.json").is_file() {
        dirs.push(dir.to_path_buf());
    } else {
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("manifest.json").is_file())
            .collect();
        subs.sort();
        dirs.extend(subs);
    }
    if dirs.is_empty() {
        return Err(RecordingError::NotARecording(dir.to_path_buf()));
    }
    dirs.iter().map(|d| replay_one(d, executor, threads)).collect()
}

fn replay_one(dir: &Path, executor: &str, threads: usize) -> Result<ReplaySummary, RecordingError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| RecordingError::Malformed { path: path.clone(), line: e.line(), msg: e.to_string() })?;
    if manifest.schema != RECORDING_SCHEMA {
        return Err(RecordingError::Malformed {
            path,
            line: 1,
            msg: format!("schema {:?}, expected {RECORDING_SCHEMA:?}", manifest.schema),
        });
    }
    let mismatch = |m: String| RecordingError::Mismatch(format!("{}: {m}", dir.display()));
    let mut state = read_state(&dir.join("genesis.jsonl"))?;
    if state.root().to_hex() != manifest.genesis_root {
        return Err(mismatch(format!("genesis root {} != manifest {}", state.root(), manifest.genesis_root)));
    }
    let mut exec = executor_by_name::<NativeVm>(executor, threads).map_err(|e| mismatch(e.to_string()))?;
    let (mut blocks, mut txs) = (0, 0);
    let blocks_path = dir.join("blocks.jsonl");
    read_lines(&blocks_path, |line, b: BlockLine| {
        if b.height != blocks {
            return Err(RecordingError::Malformed {
                path: blocks_path.clone(),
                line,
                msg: format!("height {} out of order (expected {blocks})", b.height),
            });
        }
        let out = exec.execute_and_commit(&NativeVm, &mut state, &b.txs).map_err(|e| mismatch(e.to_string()))?;
        if out.outputs != b.outputs {
            let i = out.outputs.iter().zip(&b.outputs).position(|(a, b)| a != b).unwrap_or(out.outputs.len().min(b.outputs.len()));
            return Err(mismatch(format!("block {}: output of transaction {i} differs from the recording", b.height)));
        }
        let root = state.root().to_hex();
        if root != b.state_root || manifest.block_roots.get(b.height) != Some(&root) {
            return Err(mismatch(format!("block {}: state root {root} != recorded {}", b.height, b.state_root)));
        }
        blocks += 1;
        txs += b.txs.len();
        Ok(())
    })?;
    if blocks != manifest.block_roots.len() {
        return Err(mismatch(format!("{blocks} blocks in blocks.jsonl, manifest lists {}", manifest.block_roots.len())));
    }
    let final_root = state.root().to_hex();
    if final_root != manifest.final_root {
        return Err(mismatch(format!("final root {final_root} != manifest {}", manifest.final_root)));
    }
    let recorded_final = read_state(&dir.join("final_state.jsonl"))?;
    if recorded_final.root() != state.root() {
        return Err(mismatch("final_state.jsonl does not match the replayed state".into()));
    }
    Ok(ReplaySummary { workload: manifest.workload, blocks, txs, final_root })
}
