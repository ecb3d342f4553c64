//! Writes the seed corpus of every fuzz target: a few valid encodings of
//! each message type, made with mitosis-proto's own encoders, and the bytes
//! of a real handshake. The fuzzer starts from these (and from what it found
//! before, in the same directories), so it reaches the deep paths of each
//! decoder at once instead of guessing a valid header first.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (or
//! `scripts/fuzz --seeds`) writes `fuzz/corpus/<target>/seed-<name>`;
//! running it again rewrites the same files.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use mitosis_proto::auth::{client_handshake, refuse_busy, server_handshake, ClusterKey};
use mitosis_proto::descriptors::{CarriedObject, EpollWatch, FdNumber, InotifyWatch, ObjectEnd, ObjectKind, SocketExtras, UnixSide};
use mitosis_proto::error::{ErrorKind, RemoteError};
use mitosis_proto::frame::write_msg;
use mitosis_proto::image::{
    FileIdentity, FileLock, IntervalTimer, LockKind, MmFields, OpenFile, PosixTimer, ProcessProperties, Prot, Registers, Remade, ResourceLimit, SeedImage, SigAction, SignalState, ThreadState, TimerNotify, PendingSignal, Vma,
    VmaKind, RLIM_INFINITY, USER_REGS_WORDS,
};
use mitosis_proto::instance::{
    runtime_frame, InstanceCall, InstanceEvent, InstanceSpec, InstanceStart, InstanceUsage, Phase, SeedUsage, WorkerUsage,
    TAG_ERROR, TAG_PHASE, TAG_REPLY,
};
use mitosis_proto::local::{
    CacheStats, ChildEnd, ChildInfo, ChildStatus, ContainerLimits, ContainerSpec, DaemonStats, Envelope, LocalRequest,
    LocalResponse, OffloadReport, PagerStats, Paging, PoolStats, ReplySlot, ResumeOptions, ResumeTimings, SeedInfo, SeedStats, CHILD_MARKER,
};
use mitosis_proto::memnode::{Compression, InstanceUsage as MemnodeInstance, MemnodeRequest, MemnodeResponse, MemnodeStats, MEMNODE_MAGIC};
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::secure::Protection;
use mitosis_proto::PROTOCOL_VERSION;
use serde::Serialize;

/// Must match `mitosis_fuzz::decoders::FUZZ_KEY` (the handshake seeds are made with it).
const FUZZ_KEY: &[u8] = b"mitosis-fuzz-cluster-key";

struct Corpus {
    root: PathBuf,
    written: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
        self.written += 1;
    }

    /// One message as a frame.
    fn frame<T: Serialize>(&mut self, target: &str, name: &str, msg: &T) {
        let mut bytes = Vec::new();
        write_msg(&mut bytes, msg).expect("seeds encode");
        self.put(target, name, &bytes);
    }
}

fn image() -> SeedImage {
    let identity = FileIdentity { file_type: 0o100000, dev: 8, ino: 42, rdev: 0, size: 4096, mtime_sec: 5, mtime_nsec: 1 };
    let rw = Prot { read: true, write: true, exec: false };
    SeedImage {
        id: "fn-hello.1".into(),
        generation: 7,
        source_pid: 1234,
        uid: 1000,
        gid: 1000,
        groups: vec![1000, 27],
        regs: Registers { words: [0x41; USER_REGS_WORDS] },
        xstate: vec![0; 64],
        vmas: vec![
            Vma {
                start: 0x40_0000,
                end: 0x40_2000,
                prot: Prot { read: true, write: false, exec: true },
                kind: VmaKind::File { path: "/usr/bin/python3".into(), offset: 0, identity },
                name: "/usr/bin/python3".into(),
                written: vec![(0x40_1000, 0x40_2000)],
                flags: 0,
                guards: vec![],
            },
            Vma { start: 0x60_0000, end: 0x70_0000, prot: rw, kind: VmaKind::Anon, name: "[heap]".into(), written: vec![], flags: 1 << 8, guards: vec![(0x60_1000, 0x60_2000)] },
            Vma {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0000_1000,
                prot: rw,
                kind: VmaKind::Opaque { name: "/memfd:x (deleted)".into() },
                name: "/memfd:x (deleted)".into(),
                written: vec![],
                flags: 0,
                guards: vec![],
            },
            Vma { start: 0x7f00_0000_1000, end: 0x7f00_0000_2000, prot: rw, kind: VmaKind::SharedAnon, name: "/dev/zero (deleted)".into(), written: vec![], flags: 0, guards: vec![] },
            Vma { start: 0x7fff_f000_0000, end: 0x7fff_f000_2000, prot: rw, kind: VmaKind::Vdso, name: "[vdso]".into(), written: vec![], flags: 0, guards: vec![] },
            Vma {
                start: 0xffff_ffff_ff60_0000,
                end: 0xffff_ffff_ff60_1000,
                prot: Prot { read: false, write: false, exec: true },
                kind: VmaKind::Vsyscall,
                name: "[vsyscall]".into(),
                written: vec![],
                flags: 0,
                guards: vec![],
            },
        ],
        mm: MmFields { start_code: 0x40_0000, end_code: 0x40_2000, brk: 0x60_1000, ..MmFields::default() },
        auxv: vec![6, 0, 0, 0, 0, 16, 0, 0],
        signals: SignalState { blocked: 1 << 9, actions: vec![SigAction { signo: 2, handler: 0x40_1000, flags: 0x0400_0000, restorer: 0x40_1100, mask: 0 }] },
        cwd: "/srv/fn".into(),
        cwd_identity: FileIdentity { file_type: 0o040000, ..identity },
        exe: Some(("/usr/bin/python3".into(), identity)),
        files: vec![OpenFile {
            fd: 3,
            path: "/srv/fn/data".into(),
            flags: 0o2,
            pos: 17,
            identity,
            locks: vec![FileLock { kind: LockKind::Posix, write: true, start: 0, end: Some(99) }],
            remade: None,
        }, OpenFile {
            fd: 5,
            path: "/srv/fn/link (deleted)".into(),
            flags: 0o10000000 | 0o400000,
            pos: 0,
            identity: FileIdentity { file_type: 0o120000, ..identity },
            locks: Vec::new(),
            remade: Some(Remade::Symlink { target: "/srv/fn/data".into() }),
        }],
        closed_fds: vec![(4, "socket:[1234]".into())],
        vdso_hash: 0xfeed,
        kernel: "6.18.0".into(),
        rss_bytes: 1 << 20,
        prepared_unix_ms: 1_700_000_000_000,
        prepare_us: 900,
        reply_slot: Some(ReplySlot { addr: 0x60_0800, len: 256 }),
        rseq: Some((0x60_0100, 32, 0x5305_3053)),
        robust_list: (0x60_0200, 24),
        tid_address: 0x60_0300,
        altstack: (0, 2, 0),
        properties: ProcessProperties {
            umask: 0o027,
            rlimits: vec![
                ResourceLimit { resource: 3, soft: 8 << 20, hard: RLIM_INFINITY },
                ResourceLimit { resource: 7, soft: 64, hard: 128 },
            ],
            oom_score_adj: 300,
            dumpable: 1,
            thp_disabled: true,
            personality: 0x0040000,
            child_subreaper: true,
            interval_timers: vec![IntervalTimer { which: 1, value_us: 900, interval_us: 0 }],
            posix_timers: vec![PosixTimer { id: 0, clock: 0, notify: TimerNotify::Process, signo: 14, value: 7, left_ns: 1_000_000, interval_ns: 0 }],
            membarrier: 1 << 4,
            loginuid: Some(1000),
        },
        comm: "python3".into(),
        threads: vec![ThreadState {
            tid: 1235,
            regs: Registers { words: [7; USER_REGS_WORDS] },
            xstate: vec![0; 64],
            blocked: 1 << 1,
            rseq: None,
            robust_list: (0x60_0400, 24),
            tid_address: 0x60_0500,
            altstack: (0, 2, 0),
            comm: "worker".into(),
            pending: vec![],
        }],
        leader_tid: 1234,
        reply_thread: Some(0),
        tcb_tid_offset: Some(0x2d0),
        carried: vec![
            CarriedObject {
                kind: ObjectKind::Pipe { capacity: 65536, data: b"queued".to_vec() },
                ends: vec![
                    ObjectEnd { fds: vec![FdNumber { fd: 5, cloexec: false }], status_flags: 0, access: 0, pos: 0 },
                    ObjectEnd { fds: vec![FdNumber { fd: 6, cloexec: true }, FdNumber { fd: 9, cloexec: false }], status_flags: 0o4000, access: 1, pos: 0 },
                ],
            },
            CarriedObject {
                kind: ObjectKind::Epoll { watches: vec![EpollWatch { fd: 5, file_fd: 5, events: 1, data: 0xdead }] },
                ends: vec![ObjectEnd { fds: vec![FdNumber { fd: 7, cloexec: true }], status_flags: 0, access: 2, pos: 0 }],
            },
            CarriedObject {
                kind: ObjectKind::UnixPair {
                    kind: 5,
                    sides: vec![
                        UnixSide { options: vec![(1, 7, 212_992)], queue: vec![b"one".to_vec(), vec![]], shutdown: 0, extras: SocketExtras { linger: Some((1, 7)), filter: vec![6, 0, 0, 0, 0xff, 0xff, 0, 0], ..SocketExtras::default() } },
                        UnixSide { options: vec![], queue: vec![], shutdown: 2, extras: SocketExtras::default() },
                    ],
                },
                ends: vec![
                    ObjectEnd { fds: vec![FdNumber { fd: 10, cloexec: false }], status_flags: 0, access: 2, pos: 0 },
                    ObjectEnd { fds: vec![FdNumber { fd: 11, cloexec: true }], status_flags: 0o4000, access: 2, pos: 0 },
                ],
            },
            CarriedObject {
                kind: ObjectKind::Inotify { watches: vec![InotifyWatch { wd: 2, path: "/srv/fn/hello".into(), mask: 0x100 }] },
                ends: vec![ObjectEnd { fds: vec![FdNumber { fd: 12, cloexec: true }], status_flags: 0o4000, access: 0, pos: 0 }],
            },
        ],
        pending: vec![PendingSignal { info: [10i32.to_ne_bytes().to_vec(), vec![0; 124]].concat() }],
        shared_pending: vec![],
    }
}

fn spec(start: InstanceStart) -> InstanceSpec {
    InstanceSpec { name: "hello-1".into(), function: "hello".into(), dir: "/srv/fn/hello".into(), start, memory_bytes: Some(256 << 20), offload_idle_after_ms: Some(60_000), offload_policy: mitosis_proto::instance::OffloadPolicy::FAASMEM }
}

fn seed_info() -> SeedInfo {
    SeedInfo {
        id: "fn-hello.1".into(),
        generation: 7,
        source_pid: 1234,
        snapshot_pid: 1240,
        uid: 1000,
        mapped_bytes: 1 << 24,
        rss_bytes: 1 << 20,
        vmas: 40,
        age_ms: 1500,
        prepare_us: 900,
        pinned: true,
        copied_bytes: Some(4096),
        closed_fds: vec![(4, "socket:[1234]".into())],
        threads: 2,
    }
}

/// Records what crosses a stream in each direction.
struct Tap<S> {
    inner: S,
    read: Vec<u8>,
    written: Vec<u8>,
}

impl<S: Read> Read for Tap<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<S: Write> Write for Tap<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn handshake_seeds(c: &mut Corpus) {
    for (name, protection) in [("encrypted", Protection::Encrypted), ("integrity", Protection::Integrity)] {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let server = std::thread::spawn(move || {
            let mut b = b;
            server_handshake(&mut b, &ClusterKey::from_file_contents(FUZZ_KEY).unwrap(), protection).expect("server handshake")
        });
        let mut tap = Tap { inner: a, read: Vec::new(), written: Vec::new() };
        client_handshake(&mut tap, &ClusterKey::from_file_contents(FUZZ_KEY).unwrap(), protection).expect("client handshake");
        server.join().unwrap();
        // What a client sends (a server's input) and what a server answers (a client's).
        c.put("handshake", &format!("client-{name}"), &tap.written);
        c.put("handshake", &format!("server-{name}"), &tap.read);
    }
    let mut old_hello = b"MITOSIS1".to_vec();
    old_hello.extend_from_slice(&2u32.to_le_bytes());
    old_hello.extend_from_slice(&[7u8; 32]);
    c.put("handshake", "hello-version-2", &old_hello);
    let mut busy = Vec::new();
    refuse_busy(&mut busy).unwrap();
    c.put("handshake", "busy", &busy);
    c.put("handshake", "key-file", b"  0123456789abcdef-cluster-key\n");
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut c = Corpus { root, written: 0 };

    // frame: frames of a few sizes, and one announcing more than any limit.
    c.put("frame", "empty", &0u32.to_le_bytes());
    c.put("frame", "small", &[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o', 3, 0, 0, 0, 1, 2, 3]);
    c.put("frame", "over-limit", &[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]);
    let mut ping = Vec::new();
    write_msg(&mut ping, &PeerRequest::Ping).unwrap();
    c.put("frame", "ping", &ping);

    handshake_seeds(&mut c);

    // record: scripts (see decoders::record): protection and read sizes,
    // then ops (0 send, 1 raw bytes, 2 flip a bit, 3 cut).
    c.put("record", "one-payload-encrypted", &[0x00, 0x00, 0x20, 0x00, 0x41]);
    c.put("record", "one-payload-integrity", &[0x01, 0x00, 0x20, 0x00, 0x41]);
    c.put("record", "two-records", &[0x02, 0x00, 0xff, 0xff, 0x10, 0x00, 0x05, 0x00, 0x20]);
    c.put("record", "flipped", &[0x03, 0x00, 0x40, 0x00, 0x41, 0x22, 0x07, 0x00]);
    c.put("record", "garbage-after", &[0x04, 0x00, 0x10, 0x00, 0x41, 0x01, 0x04, 0x14, 0x00, 0xaa, 0xbb]);
    c.put("record", "cut", &[0x06, 0x00, 0x10, 0x00, 0x41, 0x03, 0x05]);

    // peer_request: every request.
    let ranges = vec![(0x60_0000u64, 0x2000u64), (0x7f00_0000_0000, 0x1000)];
    c.frame("peer_request", "get-seed", &PeerRequest::GetSeed { id: "fn-hello.1".into() });
    c.frame("peer_request", "read-pages", &PeerRequest::ReadPages { id: "fn-hello.1".into(), generation: 7, ranges: ranges.clone() });
    c.frame("peer_request", "record-working-set", &PeerRequest::RecordWorkingSet { id: "fn-hello.1".into(), generation: 7, ranges: ranges.clone() });
    c.frame("peer_request", "start-cold", &PeerRequest::StartInstance(spec(InstanceStart::Cold { prepare_as: Some("fn-hello-1".into()) })));
    c.frame("peer_request", "start-fork", &PeerRequest::StartInstance(spec(InstanceStart::Fork { seed_host: "10.0.0.1:7070".into(), seed_id: "fn-hello-1".into() })));
    c.frame("peer_request", "list-instances", &PeerRequest::ListInstances);
    c.frame("peer_request", "drop-seed", &PeerRequest::DropSeed { id: "fn-hello.1".into() });
    c.frame("peer_request", "ping", &PeerRequest::Ping);
    c.frame("peer_request", "checksummed", &PeerRequest::Checksummed { seq: 42 });
    let mut pipelined = Vec::new();
    for seq in 0..3 {
        write_msg(&mut pipelined, &PeerRequest::Checksummed { seq }).unwrap();
    }
    c.put("peer_request", "pipelined", &pipelined);

    // peer_response: every answer.
    c.frame("peer_response", "seed", &PeerResponse::Seed { image: Box::new(image()), working_set: ranges.clone() });
    c.frame("peer_response", "recorded", &PeerResponse::Recorded);
    c.frame("peer_response", "pages", &PeerResponse::Pages { len: 8192 });
    c.frame("peer_response", "instance-started", &PeerResponse::InstanceStarted { pid: 99, container: Some("mitosis-7".into()), start_us: 1500 });
    c.frame("peer_response", "instances", &PeerResponse::Instances(WorkerUsage {
        instances: vec![InstanceUsage { name: "hello-1".into(), function: "hello".into(), pid: 99, memory_bytes: 1 << 22 }],
        seeds: vec![SeedUsage { id: "fn-hello-1".into(), bytes: 1 << 20 }],
    }));
    c.frame("peer_response", "dropped", &PeerResponse::Dropped);
    c.frame("peer_response", "error", &PeerResponse::Error(RemoteError::new(ErrorKind::NotFound, "no seed \"x\" on this host")));
    c.frame("peer_response", "pong", &PeerResponse::Pong);
    c.frame("peer_response", "checksummed", &PeerResponse::checksummed(42, (0..64u8).collect()));

    // memnode_request: every request, and a put with its pages after it.
    let runs = vec![(0x5555_0000_0000u64, 0x2000u64), (0x7ffd_0000_0000, 0x1000)];
    c.frame("memnode_request", "hello", &MemnodeRequest::Hello { magic: MEMNODE_MAGIC });
    let put = MemnodeRequest::Put { instance: "worker-b/fn-7".into(), runs: runs.clone(), digests: vec![[7; 16]; 3] };
    let mut put_bytes = Vec::new();
    write_msg(&mut put_bytes, &put).unwrap();
    put_bytes.extend_from_slice(&[0x5a; 3 * 4096]);
    c.put("memnode_request", "put", &put_bytes);
    c.frame("memnode_request", "get", &MemnodeRequest::Get { instance: "worker-b/fn-7".into(), runs: runs.clone() });
    c.frame("memnode_request", "drop-instance", &MemnodeRequest::DropInstance { instance: "worker-b/fn-7".into() });
    c.frame("memnode_request", "stats", &MemnodeRequest::Stats);

    // memnode_response: every answer.
    c.frame("memnode_response", "hello", &MemnodeResponse::Hello { capacity: 1 << 30, compression: Compression::Lz4 });
    c.frame("memnode_response", "stored", &MemnodeResponse::Stored { pages: 3, instance_pages: 3, instance_used_bytes: 2000 });
    c.frame("memnode_response", "full", &MemnodeResponse::Full { needed: 12288, used: 1 << 20, capacity: 1 << 20 });
    c.frame("memnode_response", "pages", &MemnodeResponse::Pages { len: 8192, digests: vec![[1; 16], [2; 16]] });
    c.frame("memnode_response", "dropped", &MemnodeResponse::Dropped { pages: 3, raw_bytes: 12288 });
    c.frame("memnode_response", "stats", &MemnodeResponse::Stats(MemnodeStats {
        compression: Compression::Zstd,
        capacity_bytes: 1 << 30,
        used_bytes: 5000,
        pages: 3,
        raw_bytes: 12288,
        stored_bytes: 4808,
        instances: 1,
        per_instance: vec![MemnodeInstance { instance: "worker-b/fn-7".into(), pages: 3, raw_bytes: 12288, stored_bytes: 4808 }],
        puts: 1,
        pages_put: 3,
        gets: 2,
        pages_served: 3,
        misses: 1,
        drops: 0,
        refusals: 1,
        bad_requests: 2,
    }));
    c.frame("memnode_response", "error", &MemnodeResponse::Error(RemoteError::new(ErrorKind::NotFound, "page 0x1000 of instance \"i\" was never put on this memory node")));

    // local_request: every request, in its envelope.
    let env = |request| Envelope { version: PROTOCOL_VERSION, request };
    let container = ContainerSpec {
        limits: ContainerLimits { memory_bytes: Some(1 << 28), cpu_millis: Some(500), pids: Some(64) },
        rootfs: Some("/srv/rootfs".into()),
        network: true,
        hostname: Some("box".into()),
    };
    let requests = [
        ("prepare", LocalRequest::Prepare { pid: 1234, id: "fn-hello.1".into(), reply_slot: Some(ReplySlot { addr: 0x60_0800, len: 256 }), pinned: true, copy: false }),
        ("resume", LocalRequest::Resume {
            from: "10.0.0.1:7070".into(),
            id: "fn-hello.1".into(),
            options: ResumeOptions {
                container: Some(container.clone()),
                detach: false,
                paging: Paging { eager: true, no_prefetch: false, no_working_set: true, no_cache: false, track_writes: true },
            },
        }),
        ("resume-in-place", LocalRequest::ResumeInPlace { from: "10.0.0.1:7070".into(), id: "fn-hello.1".into() }),
        ("drop", LocalRequest::Drop { id: "fn-hello.1".into() }),
        ("list", LocalRequest::List),
        ("ps", LocalRequest::Ps { all: true }),
        ("kill", LocalRequest::Kill { id: "mitosis-7".into() }),
        ("offload", LocalRequest::Offload { id: "mitosis-7".into() }),
        ("prefetch", LocalRequest::Prefetch { id: "mitosis-7".into() }),
        ("stats", LocalRequest::Stats),
        ("bare-container", LocalRequest::BareContainer { spec: container }),
    ];
    for (name, request) in requests {
        c.frame("local_request", name, &env(request));
    }
    c.frame("local_request", "version-3", &Envelope { version: 3, request: LocalRequest::List });

    // local_response: every answer, and a self-prepared child's.
    let child = ChildStatus {
        pid: 99,
        seed_id: "fn-hello.1".into(),
        seed_host: "10.0.0.1:7070".into(),
        container: Some("mitosis-7".into()),
        memory_bytes: 1 << 22,
        shared_bytes: 1 << 21,
        private_bytes: 1 << 20,
        age_ms: 20,
        detached: false,
        uid: 1000,
        end: Some(ChildEnd::OutOfMemory { limit_bytes: Some(1 << 28) }),
    };
    let pool = PoolStats { warm: 2, target: 2, created: 5, destroyed: 3, cgroup_dirs: 4 };
    let responses = [
        ("prepared", LocalResponse::Prepared(seed_info())),
        ("started", LocalResponse::Started { pid: 99, timings: ResumeTimings { fetch_image_us: 100, spawn_us: 200, restore_us: 300, total_us: 700, image_bytes: 9000 }, container: None }),
        ("exited", LocalResponse::Exited { end: ChildEnd::Signaled(9), stats: PagerStats { faults: 10, zero_faults: 1, remote_faults: 2, pages_fetched: 30, bytes_fetched: 30 * 4096, fetches: 3, pages_pushed: 20, cache_hits: 5, pages_from_node: 4 } }),
        ("exited-killed", LocalResponse::Exited { end: ChildEnd::KilledByMitosis { reason: "seed gone".into() }, stats: PagerStats::default() }),
        ("dropped", LocalResponse::Dropped { id: "fn-hello.1".into() }),
        ("in-place", LocalResponse::InPlace { prologue: vec![1, 2, 3, 4] }),
        ("seeds", LocalResponse::Seeds(vec![seed_info()])),
        ("children", LocalResponse::Children { children: vec![child], pool: pool.clone() }),
        ("killed", LocalResponse::Killed { pid: 99 }),
        ("prefetching", LocalResponse::Prefetching { pid: 99, from_node_bytes: 1 << 20, from_seed_bytes: 4096 }),
        ("offloaded", LocalResponse::Offloaded(OffloadReport { pid: 99, pages_put: 10, pages_clean_at_seed: 20, pages_zero: 3, node_bytes: 9000, ..Default::default() })),
        ("stats", LocalResponse::Stats(DaemonStats {
            seeds: vec![SeedStats { id: "fn-hello.1".into(), generation: 7, children: 3, pages_served: 10, bytes_served: 40960, working_set_pages: 4 }],
            cache: CacheStats { limit_bytes: 1 << 30, bytes: 1 << 20, generations: 1, hits: 5, misses: 6, evictions: 0, seeds: vec![("fn-hello.1".into(), 1 << 20)] },
            pool,
            children_running: 1,
            barriers: mitosis_proto::local::BarrierStats { count: 4, p50_us: 300, p99_us: 900, max_us: 1200, pager_p50_us: 200, pager_p99_us: 700 },
        })),
        ("bare-container", LocalResponse::BareContainer { take_us: 10, start_us: 200, total_us: 900 }),
        ("error", LocalResponse::Error(RemoteError::new(ErrorKind::PermissionDenied, "seed \"x\" belongs to uid 0"))),
    ];
    for (name, response) in responses {
        c.frame("local_response", name, &response);
    }
    let mut child_answer = CHILD_MARKER.to_vec();
    child_answer.extend(postcard::to_stdvec(&ChildInfo { seed_id: "fn-hello.1".into(), seed_host: "10.0.0.1:7070".into(), generation: 7, pid: 99 }).unwrap());
    c.put("local_response", "child-info", &child_answer);

    // seed_image: the payload of a `Seed` answer's image.
    c.put("seed_image", "image", &postcard::to_stdvec(&image()).unwrap());
    let mut bare = image();
    bare.vmas.truncate(1);
    bare.files.clear();
    bare.exe = None;
    bare.reply_slot = None;
    c.put("seed_image", "bare", &postcard::to_stdvec(&bare).unwrap());

    // instance: calls and events on an instance's connection.
    c.frame("instance", "invoke", &InstanceCall::Invoke { body: b"{\"name\": \"x\"}".to_vec() });
    c.frame("instance", "stop", &InstanceCall::Stop);
    c.frame("instance", "phase", &InstanceEvent::Phase(Phase::Prepared { seed_id: "fn-hello-1".into(), generation: 7 }));
    c.frame("instance", "reply", &InstanceEvent::Reply { ok: true, body: b"{\"result\": 1}".to_vec() });
    c.frame("instance", "ended", &InstanceEvent::Ended { end: Some(ChildEnd::Exited(3)), reason: "it exited".into(), stderr_tail: "Traceback".into() });

    // runtime_pipe: the read size, then what a runtime writes on its stdout.
    let mut session = vec![6u8];
    for (tag, body) in [
        (TAG_PHASE, &b"runtime"[..]),
        (TAG_PHASE, b"init"),
        (TAG_PHASE, b"prepared:fn-hello-1:1f"),
        (TAG_PHASE, b"ready"),
        (TAG_REPLY, b"{\"result\": 1}"),
        (TAG_ERROR, b"ValueError: no"),
    ] {
        session.extend(runtime_frame(tag, body));
    }
    c.put("runtime_pipe", "session", &session);
    let mut unknown = vec![255u8];
    unknown.extend(runtime_frame(TAG_PHASE, b"warming"));
    c.put("runtime_pipe", "unknown-phase", &unknown);

    println!("{} seed files written under {}", c.written, c.root.display());
}
