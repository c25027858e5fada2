//! Streams a code folder's files into a pending upload's container, resumably, in bounded memory.
//!
//! Files go in upload order. A file of at most [`BLOCK_SIZE`] is one Put Blob; a larger one is
//! read one block at a time, each block a Put Block, then one Put Block List. At most
//! [`IN_FLIGHT`] requests run at once, holding together at most [`BYTES_IN_FLIGHT`] of file data
//! (so 8 blocks, or 16 small files), so memory stays bounded whatever the file sizes.
//!
//! Each block's id is the SHA-256 of the file up to the end of that block (the same bytes, the
//! same id; a clone of the file's running hash, so nothing is hashed twice): a block staged by an
//! earlier visit is found in the blob's block list and not sent again, and what is committed is
//! exactly what was read and hashed now. Every byte read is folded into the file's SHA-256, and the files
//! into an [`UploadChain`] that the caller compares with the plan's: content that changed since
//! the plan is never taken for the planned content.
//!
//! A pass stops starting new work at its deadline (requests already sent finish, each bounded by
//! [`super::upload::UPLOAD_REQUEST_TIMEOUT`]) and reports how many files, from the first, are
//! complete, and the chain over them: the next visit continues from there.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use azure_core::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

use super::upload::{SasContainer, UploadError};
use crate::deployment::assets::code::UploadChain;

/// Bytes per block (and the largest file sent in one request): the SDK's 4 MiB.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Requests in flight at once.
pub const IN_FLIGHT: usize = 16;
/// File data held by the requests in flight, at most.
pub const BYTES_IN_FLIGHT: u64 = 8 * BLOCK_SIZE as u64;

/// Block buffers, reused. Allocated afresh, 4 MiB buffers filled on blocking threads and freed
/// wherever a request ends let the allocator keep freed ones around: peak memory drifted up to
/// 30 MiB above what was in flight.
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// A buffer of `len` bytes (at most [`BLOCK_SIZE`]).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buffer = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE));
        buffer.clear();
        buffer.resize(len, 0);
        buffer
    }

    /// `buffer` as a request body that comes back to the pool when the request drops it.
    fn bytes(&self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buffer,
            pool: self.clone(),
        })
    }
}

struct Pooled {
    buffer: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pool = self.pool.0.lock().unwrap_or_else(|p| p.into_inner());
        // One more than can be in flight: the block being read.
        if pool.len() <= (BYTES_IN_FLIGHT / BLOCK_SIZE as u64) as usize {
            pool.push(std::mem::take(&mut self.buffer));
        }
    }
}

/// One file to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its blob name.
    pub blob: String,
    /// Where to read it.
    pub path: PathBuf,
    /// Its size when listed; reading a different number of bytes means it changed.
    pub size: u64,
}

/// How far a pass got.
#[derive(Debug)]
pub struct Sent {
    /// Files complete, counted from the first.
    pub done: usize,
    /// The chain over those files.
    pub chain: UploadChain,
    /// Bytes sent in this pass (blocks found already staged are not counted).
    pub bytes: u64,
    /// Why the pass stopped early, if it did not stop at the deadline or the end.
    pub error: Option<UploadError>,
}

/// What a finished request completed.
enum Done {
    /// A block of file `.0`.
    Block(usize),
    /// File `.0` is complete.
    File(usize),
}

/// A large file being read.
struct Reading {
    index: usize,
    file: std::fs::File,
    read: u64,
    sha: Sha256,
    ids: Vec<Vec<u8>>,
    /// Blocks already staged (or committed) by an earlier visit.
    present: HashSet<Vec<u8>>,
    committed: Vec<Vec<u8>>,
}

/// A file whose blocks are all read, waiting for them to be staged before its commit.
struct Committing {
    index: usize,
    ids: Vec<Vec<u8>>,
    /// The blob is already committed with these blocks.
    already: bool,
}

/// Sends `files[start..]` into `container`, from `chain` (the chain over `files[..start]`),
/// until all are complete, `deadline` passes or a request fails.
pub async fn send(
    container: &SasContainer,
    files: &[Outgoing],
    start: usize,
    chain: UploadChain,
    deadline: Instant,
) -> Sent {
    let mut run = Run {
        container,
        files,
        set: JoinSet::new(),
        holding: 0,
        next_file: start,
        reading: None,
        committing: VecDeque::new(),
        staging: HashMap::new(),
        complete: BTreeSet::new(),
        chains: VecDeque::new(),
        pool: Pool::default(),
        sent: Sent {
            done: start,
            chain,
            bytes: 0,
            error: None,
        },
        folded: chain,
    };
    run.go(deadline).await;
    run.sent
}

struct Run<'a> {
    container: &'a SasContainer,
    files: &'a [Outgoing],
    set: JoinSet<Result<(Done, u64), UploadError>>,
    /// File bytes held by the requests in flight.
    holding: u64,
    /// Block buffers.
    pool: Pool,
    next_file: usize,
    reading: Option<Reading>,
    committing: VecDeque<Committing>,
    /// Put Block requests in flight, per file.
    staging: HashMap<usize, usize>,
    complete: BTreeSet<usize>,
    /// The chain after each file read but not yet counted in `sent.done`, in file order.
    chains: VecDeque<(usize, UploadChain)>,
    sent: Sent,
    /// The chain over every file read so far.
    folded: UploadChain,
}

impl Run<'_> {
    async fn go(&mut self, deadline: Instant) {
        loop {
            while self.sent.error.is_none()
                && self.set.len() < IN_FLIGHT
                && self.holding + self.upcoming() <= BYTES_IN_FLIGHT
            {
                match self.produce(deadline).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        self.sent.error.get_or_insert(e);
                    }
                }
            }
            // After an error nothing new starts; requests already sent finish (each within its
            // timeout), so what they did is counted.
            match self.set.join_next().await {
                None => return,
                Some(Ok(Ok((done, bytes)))) => {
                    self.holding -= bytes;
                    self.finished(done);
                }
                Some(Ok(Err(e))) => {
                    self.sent.error.get_or_insert(e);
                }
                Some(Err(e)) => {
                    self.sent.error.get_or_insert(UploadError::Unavailable {
                        blob: String::new(),
                        message: format!("an upload request stopped: {e}"),
                    });
                }
            }
        }
    }

    /// Starts one request: a ready commit first, else the next block or small file. `false`
    /// when there is nothing to start now.
    async fn produce(&mut self, deadline: Instant) -> Result<bool, UploadError> {
        // Commits are small: they go even past the deadline, so read blocks are not wasted.
        if let Some(ready) = self
            .committing
            .iter()
            .position(|c| self.staging.get(&c.index).is_none_or(|n| *n == 0))
        {
            let Some(c) = self.committing.remove(ready) else {
                return Ok(false);
            };
            let blob = self.files[c.index].blob.clone();
            let container = self.container.clone();
            let index = c.index;
            if c.already {
                self.finished(Done::File(index));
            } else {
                self.set.spawn(async move {
                    container.commit_new(&blob, c.ids).await?;
                    Ok((Done::File(index), 0))
                });
            }
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        if self.reading.is_none() {
            let Some(file) = self.files.get(self.next_file) else {
                return Ok(false);
            };
            let index = self.next_file;
            self.next_file += 1;
            if file.size <= BLOCK_SIZE as u64 {
                let (bytes, sha) = read_whole(file).await?;
                self.fold(index, &sha);
                let container = self.container.clone();
                let blob = file.blob.clone();
                let held = bytes.len() as u64;
                self.sent.bytes += held;
                self.holding += held;
                self.set.spawn(async move {
                    container.put_new(&blob, bytes).await?;
                    Ok((Done::File(index), held))
                });
                return Ok(true);
            }
            let (committed, uncommitted) = self.container.blocks(&file.blob).await?;
            let opened = std::fs::File::open(&file.path).map_err(|e| local(file, e))?;
            self.reading = Some(Reading {
                index,
                file: opened,
                read: 0,
                sha: Sha256::new(),
                ids: Vec::new(),
                present: committed.iter().chain(&uncommitted).cloned().collect(),
                committed,
            });
        }
        let Some(reading) = self.reading.take() else {
            return Ok(false);
        };
        let file = &self.files[reading.index];
        let (mut reading, block) = read_block(reading, file, &self.pool).await?;
        let Some((bytes, prefix)) = block else {
            // The whole file is read.
            let sha: [u8; 32] = reading.sha.finalize().into();
            self.fold(reading.index, &sha);
            let already = reading.committed == reading.ids;
            self.committing.push_back(Committing {
                index: reading.index,
                ids: reading.ids,
                already,
            });
            return Ok(true);
        };
        let id = hex(&prefix).into_bytes();
        reading.ids.push(id.clone());
        let index = reading.index;
        let fresh = reading.present.insert(id.clone());
        self.reading = Some(reading);
        if fresh {
            let container = self.container.clone();
            let blob = file.blob.clone();
            let held = bytes.len() as u64;
            self.sent.bytes += held;
            self.holding += held;
            *self.staging.entry(index).or_default() += 1;
            self.set.spawn(async move {
                container.stage(&blob, &id, bytes).await?;
                Ok((Done::Block(index), held))
            });
        }
        Ok(true)
    }

    /// The file bytes the next request would hold (a commit holds none).
    fn upcoming(&self) -> u64 {
        let block = BLOCK_SIZE as u64;
        if self
            .committing
            .iter()
            .any(|c| self.staging.get(&c.index).is_none_or(|n| *n == 0))
        {
            return 0;
        }
        match &self.reading {
            Some(r) => (self.files[r.index].size - r.read).min(block),
            None => self
                .files
                .get(self.next_file)
                .map_or(0, |f| f.size.min(block)),
        }
    }

    fn fold(&mut self, index: usize, sha: &[u8; 32]) {
        let file = &self.files[index];
        self.folded.fold(&file.blob, file.size, sha);
        self.chains.push_back((index, self.folded));
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Block(index) => {
                if let Some(n) = self.staging.get_mut(&index) {
                    *n = n.saturating_sub(1);
                }
            }
            Done::File(index) => {
                self.complete.insert(index);
                while self.complete.remove(&self.sent.done) {
                    if let Some((_, chain)) = self.chains.pop_front() {
                        self.sent.chain = chain;
                    }
                    self.sent.done += 1;
                }
            }
        }
    }
}

/// A small file, read whole: exactly its listed size, else it changed.
async fn read_whole(file: &Outgoing) -> Result<(Bytes, [u8; 32]), UploadError> {
    let path = file.path.clone();
    let size = file.size;
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Vec<u8>>> {
        let mut bytes = Vec::with_capacity(size as usize);
        std::fs::File::open(&path)?
            .take(size + 1)
            .read_to_end(&mut bytes)?;
        Ok((bytes.len() as u64 == size).then_some(bytes))
    })
    .await
    .map_err(|e| local(file, std::io::Error::other(e)))?
    .map_err(|e| local(file, e))?;
    let Some(bytes) = read else {
        return Err(changed(file));
    };
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    Ok((Bytes::from(bytes), sha))
}

/// The next block of a large file (`None` at its end), folded into its SHA-256, with the
/// SHA-256 of the file up to its end (its id).
async fn read_block(
    mut reading: Reading,
    file: &Outgoing,
    pool: &Pool,
) -> Result<(Reading, Option<(Bytes, [u8; 32])>), UploadError> {
    let size = file.size;
    let pool = pool.clone();
    let done = tokio::task::spawn_blocking(move || {
        let want = (size - reading.read).min(BLOCK_SIZE as u64) as usize;
        let mut block = pool.take(want);
        let mut filled = 0;
        while filled < want {
            match reading.file.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return (reading, Err(e)),
            }
        }
        if filled < want {
            return (reading, Ok(None));
        }
        if want == 0 {
            // The listed size is read: the file must end here.
            let mut probe = [0u8; 1];
            let more = loop {
                match reading.file.read(&mut probe) {
                    Ok(n) => break n > 0,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return (reading, Err(e)),
                }
            };
            return (reading, Ok(Some((!more, None))));
        }
        reading.read += want as u64;
        reading.sha.update(&block);
        let prefix: [u8; 32] = reading.sha.clone().finalize().into();
        (reading, Ok(Some((true, Some((pool.bytes(block), prefix))))))
    })
    .await
    .map_err(|e| local(file, std::io::Error::other(e)))?;
    match done {
        (_, Err(e)) => Err(local(file, e)),
        // Shorter than listed, or longer.
        (_, Ok(None)) | (_, Ok(Some((false, _)))) => Err(changed(file)),
        (reading, Ok(Some((true, block)))) => Ok((reading, block)),
    }
}

fn local(file: &Outgoing, e: std::io::Error) -> UploadError {
    UploadError::Local {
        path: file.path.display().to_string(),
        message: e.to_string(),
    }
}

fn changed(file: &Outgoing) -> UploadError {
    UploadError::Changed {
        path: file.blob.clone(),
    }
}

fn hex(bytes: &[u8]) -> String {
    crate::deployment::assets::code::hex(bytes)
}
