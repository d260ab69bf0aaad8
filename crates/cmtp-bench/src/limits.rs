//! This machine's raw ceilings, measured in the same run as the server figures so
//! each can be stated as a ratio: append + fdatasync rate, and loopback TCP throughput.

use crate::hist::Histogram;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What `limits` measures and for how long.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Directory for the fdatasync files (put it on the server's data filesystem).
    pub dir: PathBuf,
    /// Bytes per append (10 KiB by default).
    pub record_size: usize,
    /// Wall time per fdatasync measurement.
    pub fsync_duration: Duration,
    /// Thread counts to measure fdatasync with.
    pub fsync_threads: Vec<usize>,
    /// Wall time per TCP measurement.
    pub tcp_duration: Duration,
    /// Stream counts to measure loopback TCP with.
    pub tcp_streams: Vec<usize>,
    /// Bytes of the sequential write + fdatasync measurement (0 skips it).
    pub seq_size: u64,
}

/// Write + fdatasync, `threads` threads each on its own file.
#[derive(Debug, Clone, Serialize)]
pub struct FsyncResult {
    /// Append or overwrite.
    pub mode: FsyncMode,
    /// Threads writing concurrently.
    pub threads: usize,
    /// Bytes per append.
    pub record_size: usize,
    /// Appends (each followed by fdatasync) completed.
    pub ops: u64,
    /// Wall time.
    pub seconds: f64,
    /// Appends + fdatasync per second, all threads together.
    pub ops_per_sec: f64,
    /// MB/s (10^6 bytes) appended.
    pub mb_per_sec: f64,
    /// Median time of one write + fdatasync, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Loopback TCP from `streams` client streams to an in-process sink.
#[derive(Debug, Clone, Serialize)]
pub struct TcpResult {
    /// Concurrent streams.
    pub streams: usize,
    /// Bytes the sink received.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// Gbit/s.
    pub gbit_per_sec: f64,
}

/// One file written sequentially in 256 KiB writes, then one fdatasync.
#[derive(Debug, Clone, Serialize)]
pub struct SeqResult {
    /// Bytes written.
    pub bytes: u64,
    /// Time of the writes (into the page cache), seconds.
    pub write_seconds: f64,
    /// Time of the final fdatasync, seconds.
    pub fsync_seconds: f64,
    /// MB/s (10^6) of the writes alone: the cost of copying into the page cache.
    pub write_mb_per_sec: f64,
    /// MB/s (10^6) including the fdatasync: the durable rate.
    pub mb_per_sec: f64,
}

/// Everything `limits` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsReport {
    /// Where the fdatasync files were.
    pub dir: String,
    /// One entry per thread count.
    pub fsync: Vec<FsyncResult>,
    /// One entry per stream count.
    pub tcp: Vec<TcpResult>,
    /// Sequential write + fdatasync, when measured.
    pub seq: Option<SeqResult>,
    /// Load average at the end (1, 5, 15 min): other work skews every figure.
    pub load_avg: Option<[f64; 3]>,
}

/// Runs every measurement of `cfg` in turn.
pub async fn run(cfg: &LimitsConfig) -> anyhow::Result<LimitsReport> {
    let mut fsync = Vec::new();
    for mode in [FsyncMode::Append, FsyncMode::Overwrite] {
        for &t in &cfg.fsync_threads {
            let dir = cfg.dir.clone();
            let (rs, d) = (cfg.record_size, cfg.fsync_duration);
            let r = tokio::task::spawn_blocking(move || fsync_rate(&dir, rs, t, d, mode));
            fsync.push(r.await??);
        }
    }
    let seq = if cfg.seq_size > 0 {
        let (dir, size) = (cfg.dir.clone(), cfg.seq_size);
        Some(tokio::task::spawn_blocking(move || seq_write(&dir, size)).await??)
    } else {
        None
    };
    let mut tcp = Vec::new();
    for &s in &cfg.tcp_streams {
        tcp.push(tcp_rate(s, cfg.tcp_duration).await?);
    }
    Ok(LimitsReport {
        dir: cfg.dir.display().to_string(),
        fsync,
        tcp,
        seq,
        load_avg: crate::sys::load_average(),
    })
}

/// How the fdatasync measurement writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Each record extends the file, so each fdatasync also commits the new size
    /// (a journal commit on ext4).
    Append,
    /// Records overwrite a region written (zeros) and made durable beforehand, so
    /// fdatasync has only data to flush: the case of a store that preallocates.
    Overwrite,
}

/// Region each thread overwrites cyclically in [`FsyncMode::Overwrite`].
const OVERWRITE_REGION: u64 = 64 << 20;

/// Writes `record_size` bytes then fdatasyncs, in a loop, on `threads` threads (one
/// file each) for `duration`, in `mode`. Files are removed afterwards.
pub fn fsync_rate(
    dir: &Path,
    record_size: usize,
    threads: usize,
    duration: Duration,
    mode: FsyncMode,
) -> std::io::Result<FsyncResult> {
    use std::os::unix::fs::FileExt;
    let threads = threads.max(1);
    // Every thread prepares its file first; the clock starts when all are ready.
    let ready = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let path = dir.join(format!(".cmtp-bench-fsync-{}-{i}", std::process::id()));
            let ready = ready.clone();
            std::thread::spawn(move || -> std::io::Result<(Histogram, Duration)> {
                let mut rng = crate::sys::FillRng::new(i as u64 + 1);
                let mut rec = vec![0u8; record_size.max(1)];
                rng.fill(&mut rec);
                let mut h = Histogram::new();
                let res = (|| -> std::io::Result<Duration> {
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .open(&path)?;
                    let region = OVERWRITE_REGION.max(rec.len() as u64);
                    if mode == FsyncMode::Overwrite {
                        let zeros = vec![0u8; 1 << 20];
                        let mut at = 0;
                        while at < region {
                            let n = (region - at).min(zeros.len() as u64) as usize;
                            f.write_all_at(&zeros[..n], at)?;
                            at += n as u64;
                        }
                        f.sync_all()?;
                    }
                    ready.wait();
                    let start = Instant::now();
                    let deadline = start + duration;
                    let mut pos = 0u64;
                    loop {
                        let t = Instant::now();
                        match mode {
                            FsyncMode::Append => f.write_all(&rec)?,
                            FsyncMode::Overwrite => {
                                if pos + rec.len() as u64 > region {
                                    pos = 0;
                                }
                                f.write_all_at(&rec, pos)?;
                                pos += rec.len() as u64;
                            }
                        }
                        f.sync_data()?; // fdatasync(2) on Linux
                        h.record(t.elapsed().as_nanos() as u64);
                        if Instant::now() >= deadline {
                            return Ok(start.elapsed());
                        }
                    }
                })();
                let _ = std::fs::remove_file(&path);
                res.map(|d| (h, d))
            })
        })
        .collect();
    let mut all = Histogram::new();
    let mut seconds = 0f64;
    for h in handles {
        let (h, d) = h
            .join()
            .map_err(|_| std::io::Error::other("fsync thread panicked"))??;
        all.merge(&h);
        seconds = seconds.max(d.as_secs_f64());
    }
    let ops = all.count();
    Ok(FsyncResult {
        mode,
        threads,
        record_size,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        mb_per_sec: (ops * record_size as u64) as f64 / seconds / 1e6,
        p50_ms: all.quantile(0.5) as f64 / 1e6,
        p99_ms: all.quantile(0.99) as f64 / 1e6,
    })
}

/// Writes `size` bytes to a new file in 256 KiB writes, then fdatasyncs it once; the
/// file is removed afterwards. The ceiling for streaming a big message to disk.
pub fn seq_write(dir: &Path, size: u64) -> std::io::Result<SeqResult> {
    let path = dir.join(format!(".cmtp-bench-seq-{}", std::process::id()));
    let mut chunk = vec![0u8; 256 * 1024];
    crate::sys::FillRng::new(3).fill(&mut chunk);
    let res = (|| -> std::io::Result<(Duration, Duration)> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let start = Instant::now();
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        let written = Instant::now();
        f.sync_data()?;
        Ok((written - start, written.elapsed()))
    })();
    let _ = std::fs::remove_file(&path);
    let (w, s) = res?;
    let (w, s) = (w.as_secs_f64(), s.as_secs_f64());
    Ok(SeqResult {
        bytes: size,
        write_seconds: w,
        fsync_seconds: s,
        write_mb_per_sec: size as f64 / w.max(1e-9) / 1e6,
        mb_per_sec: size as f64 / (w + s).max(1e-9) / 1e6,
    })
}

/// Streams bytes from `streams` client connections to a sink on 127.0.0.1 for
/// `duration`; the rate is what the sink received over the whole wall time.
pub async fn tcp_rate(streams: usize, duration: Duration) -> std::io::Result<TcpResult> {
    let streams = streams.max(1);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let got = received.clone();
    let sink = tokio::spawn(async move {
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..streams {
            let (mut s, _) = listener.accept().await?;
            let got = got.clone();
            readers.spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    got.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
        while let Some(r) = readers.join_next().await {
            r.map_err(std::io::Error::other)??;
        }
        Ok::<_, std::io::Error>(())
    });
    let start = Instant::now();
    let deadline = start + duration;
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..streams {
        writers.spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            let mut buf = vec![0u8; 256 * 1024];
            crate::sys::FillRng::new(i as u64 + 7).fill(&mut buf);
            while Instant::now() < deadline {
                s.write_all(&buf).await?;
            }
            s.shutdown().await
        });
    }
    while let Some(r) = writers.join_next().await {
        r.map_err(std::io::Error::other)??;
    }
    sink.await.map_err(std::io::Error::other)??;
    let seconds = start.elapsed().as_secs_f64();
    let bytes = received.load(Ordering::Relaxed);
    Ok(TcpResult {
        streams,
        bytes,
        seconds,
        mb_per_sec: bytes as f64 / seconds / 1e6,
        gbit_per_sec: bytes as f64 * 8.0 / seconds / 1e9,
    })
}
