/*
 * mitosis.h - C API of mitosis: fast remote fork, in user space.
 *
 * A process prepares itself as a *seed* with the daemon of its host
 * (mitosis_fork_prepare). From then on any host can resume a *child* that
 * continues from exactly that point, its memory fetched lazily from the
 * seed host: into the calling process (mitosis_fork_resume_remote, which
 * MITOSIS calls fork_resume_remote) or as a new process (mitosis_resume).
 * Unlike MITOSIS, the two sides can tell themselves apart:
 * mitosis_fork_prepare returns MITOSIS_PARENT in the caller and
 * MITOSIS_CHILD in every child.
 *
 *     #include <mitosis.h>
 *
 *     mitosis_conn *c;
 *     int r = mitosis_open(NULL, &c);            // $MITOSIS_SOCKET or the default socket
 *     if (r < 0) { fprintf(stderr, "%s\n", mitosis_last_error()); return mitosis_exit_code(r); }
 *     r = mitosis_fork_prepare(c, "my-fn", MITOSIS_PIN);
 *     if (r == MITOSIS_PARENT)     { ... prepared; keep serving ... }
 *     else if (r == MITOSIS_CHILD) { ... resumed on some host ... }
 *     else fprintf(stderr, "%s (%s)\n", mitosis_last_error(), mitosis_strerror(r));
 *
 *     // on another host, with its own daemon:
 *     mitosis_fork_resume_remote(c, "10.0.0.1", "my-fn");   // returns only on failure
 *
 * Build:   cc prog.c $(pkg-config --cflags --libs mitosis)
 * Static:  cc prog.c $(pkg-config --cflags --libs-only-L mitosis) -l:libmitosis.a \
 *              $(pkg-config --static --libs-only-l mitosis | sed 's/-lmitosis //')
 *          (plain `pkg-config --static --libs` gives -lmitosis, which the linker
 *          resolves to the shared library when both are installed)
 * Install: scripts/install-c-api PREFIX (after cargo build --release)
 *
 * Requirements. A daemon (`mitosis daemon`) runs on every host involved,
 * with the same cluster key. The local daemon is reached through a Unix
 * socket: the path given to mitosis_open, else $MITOSIS_SOCKET, else
 * /run/mitosis/mitosis.sock. Root may prepare and resume anything; another
 * user only its own processes and seeds. A process that prepares itself may
 * have threads (every one is prepared, and goes on in each child); one that
 * is resumed in place must be single-threaded (it becomes the child).
 *
 * What a child gets: registers (with FPU/vector state), all memory at the
 * same addresses, signal dispositions and mask, cwd, regular files reopened
 * at their offsets. Its descriptors 0-2 are the resumer's; sockets, pipes and
 * the like are closed. Flush stdio buffers (fflush) before preparing, or
 * every child prints what was buffered again.
 *
 * Clone uniqueness. Every child starts with the seed's memory, so every
 * random-number generator kept in memory (rand()/random() and drand48()
 * state, a seeded PRNG, UUID and nonce generators, OpenSSL's DRBGs) would
 * produce the same numbers in every child of one seed. pthread_atfork
 * handlers do not run: a child is not made by fork(). A child must reseed
 * them from the kernel (getrandom(2), never shared) before it uses them,
 * where mitosis_fork_prepare returns MITOSIS_CHILD, or in a hook registered
 * with mitosis_child_hook. OpenSSL 1.1.1 and 3.x reseed by themselves when
 * the pid differs from the seed's, but a child can have the seed's pid (pids
 * are reused once a pinned seed's process is gone), so call RAND_poll() in
 * the child too. Bytes read from getrandom(2) or /dev/urandom are unique
 * without anything done. See "Clone uniqueness" in mitosis's README.
 *
 * Errors. Every function that can fail returns an int: >= 0 on success, or
 * one of the negative MITOSIS_E_* codes below. mitosis_strerror(code) gives a
 * static description of a code, mitosis_last_error() the detailed message of
 * the calling thread's last failure (with the function name, the seed id or
 * path concerned and the daemon's reason). mitosis_exit_code(code) gives the
 * exit status the `mitosis` command uses for the same failure (sysexits.h).
 *
 * Threads. A mitosis_conn holds no descriptor (every call connects to the
 * daemon anew), so it may be shared between threads, used after fork(), and
 * it stays valid in resumed children. A mitosis_child must be used by one
 * thread at a time.
 *
 * Signals. Each call runs with SIGPIPE blocked in the calling thread, so a
 * daemon that closes its end makes the call fail (MITOSIS_E_IO) rather than
 * kill a program that does not ignore SIGPIPE; the mask is restored before
 * the call returns.
 *
 * Versioning. The shared library's SONAME is libmitosis.so.0: the ABI may
 * change between 0.x versions. mitosis_version() gives the library version.
 */
#ifndef MITOSIS_H
#define MITOSIS_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- return values ---- */

/* Success; and what mitosis_fork_prepare returns in the process that prepared. */
#define MITOSIS_OK 0
#define MITOSIS_PARENT 0
/* What mitosis_fork_prepare returns in every child resumed from the seed. */
#define MITOSIS_CHILD 1

/* ---- error codes (negative; one per failure kind) ---- */

/* No seed with that id on the seed host (resume, drop), or no such process. */
#define MITOSIS_E_NOT_FOUND (-1)
/* The daemons could not authenticate each other (different cluster keys). */
#define MITOSIS_E_AUTH (-2)
/* Two mitosis components speak different protocol versions. */
#define MITOSIS_E_VERSION (-3)
/* The daemon refused the request as malformed: e.g. a seed id that is not
 * 1-128 characters of [A-Za-z0-9._-]. */
#define MITOSIS_E_BAD_REQUEST (-4)
/* The caller may not do this (another user's seed or process). */
#define MITOSIS_E_PERMISSION (-5)
/* The process uses something mitosis cannot capture or restore (shared
 * writable memory, a vDSO or CPU state that differs between hosts, ...). */
#define MITOSIS_E_UNSUPPORTED (-6)
/* The seed host cannot be reached, or the seed's pages are gone (dropped or
 * prepared again); from mitosis_child_wait: the child was killed because a
 * page could not be fetched, or because the local daemon stopped. */
#define MITOSIS_E_SEED_GONE (-7)
/* A daemon failed (I/O, a system call), or an internal error in the library. */
#define MITOSIS_E_INTERNAL (-8)
/* The local daemon's socket cannot be connected to (no daemon running there). */
#define MITOSIS_E_CONNECT (-9)
/* The connection to the local daemon broke, or it answered garbage. */
#define MITOSIS_E_IO (-10)
/* Invalid argument (NULL pointer, unknown flag, text that is not UTF-8, empty
 * host) or calling context (a multi-threaded process cannot be prepared or
 * resumed in place). */
#define MITOSIS_E_USAGE (-11)
/* The daemon holds as many connections as it takes (from this user, or in
 * total); try again later. */
#define MITOSIS_E_BUSY (-12)

/* ---- flags of mitosis_fork_prepare ---- */

/* The seed outlives the caller and stays until mitosis_drop (MITOSIS's
 * fork_prepare_ping). Without it the daemon drops the seed when the calling
 * process exits. */
#define MITOSIS_PIN 1

/* Port assumed for a seed host given without one. */
#define MITOSIS_DEFAULT_PORT 7070

/* ---- handles ---- */

/* The local daemon (opaque). */
typedef struct mitosis_conn mitosis_conn;
/* A child started by mitosis_resume (opaque). */
typedef struct mitosis_child mitosis_child;

/* What mitosis_fork_prepare_ex tells each side. */
typedef struct mitosis_prepare_info {
    int role;              /* MITOSIS_PARENT or MITOSIS_CHILD (the return value) */
    int32_t pid;           /* this process's pid (a child has its own) */
    uint64_t generation;   /* the seed's generation: new at every prepare */
    uint64_t prepare_us;   /* parent: how long the daemon took to prepare; child: 0 */
    uint64_t mapped_bytes; /* parent: bytes mapped by the seed; child: 0 */
    int32_t snapshot_pid;  /* parent: the daemon's stopped snapshot process; child: 0 */
    uint32_t closed_fds;   /* parent: descriptors children will not get (sockets,
                              pipes, ...: see `mitosis ls`); child: 0 */
    char seed_host[256];   /* child: the seed host's daemon address ("IP:PORT") it
                              was resumed from (NUL-terminated, truncated if
                              longer); parent: "" */
} mitosis_prepare_info;

/* ---- connection ---- */

/* Opens a handle on the local daemon at `socket` (NULL: $MITOSIS_SOCKET, or
 * /run/mitosis/mitosis.sock when unset) and stores it in *conn (NULL on
 * failure). It checks that a daemon answers there.
 * Returns 0, MITOSIS_E_CONNECT or MITOSIS_E_USAGE (conn is NULL). */
int mitosis_open(const char *socket, mitosis_conn **conn);

/* Frees a handle (NULL is ignored). Seeds and children are not affected. */
void mitosis_close(mitosis_conn *conn);

/* ---- prepare ---- */

/* Prepares the calling process as seed `id` (1-128 characters of
 * [A-Za-z0-9._-]; preparing an existing id replaces that seed) with the local
 * daemon: a copy-on-write snapshot of this instant, from which children can
 * be resumed on any host. flags: 0 (the seed goes when this process exits) or
 * MITOSIS_PIN (it stays until mitosis_drop).
 *
 * Returns MITOSIS_PARENT (0) here, once prepared, and MITOSIS_CHILD (1) in
 * every child resumed from the seed, or a negative error code here:
 * MITOSIS_E_CONNECT, MITOSIS_E_IO, MITOSIS_E_BAD_REQUEST (bad id),
 * MITOSIS_E_UNSUPPORTED, MITOSIS_E_PERMISSION, MITOSIS_E_INTERNAL,
 * MITOSIS_E_USAGE (NULL argument, unknown flag, more than one thread). */
int mitosis_fork_prepare(mitosis_conn *conn, const char *id, int flags);

/* mitosis_fork_prepare that also fills *info (unless NULL) on success, on
 * both sides: the parent's gets the seed's details, each child's its own. */
int mitosis_fork_prepare_ex(mitosis_conn *conn, const char *id, int flags, mitosis_prepare_info *info);

/* Registers `hook`, to be called as hook(arg) in every child of a later
 * mitosis_fork_prepare (or mitosis_fork_prepare_ex) of this process, right
 * before that call returns MITOSIS_CHILD (and before *info is filled), in
 * registration order; never in the parent. A child resumed in place
 * (mitosis_fork_resume_remote) continues in its seed's mitosis_fork_prepare,
 * so it runs the hooks the seed registered. The place to make a child unique
 * (see "Clone uniqueness" above):
 *
 *     static void reseed(void *arg) {
 *         unsigned seed;
 *         (void)arg;
 *         if (getrandom(&seed, sizeof seed, 0) == sizeof seed) srandom(seed);
 *         RAND_poll();                      // if the program uses OpenSSL
 *     }
 *     mitosis_child_hook(reseed, NULL);     // once, before preparing
 *
 * A hook runs in the thread that called mitosis_fork_prepare (the seed's
 * other threads go on meanwhile), with SIGPIPE blocked as during every libmitosis call.
 * It must return (no longjmp, no C++ exception out of it). It may call
 * mitosis_child_hook; the new hook runs from the next prepare on. Hooks
 * cannot be removed, and they stay registered in children (for a nested
 * prepare). `arg` is never touched by the library.
 * Returns 0, or MITOSIS_E_USAGE if hook is NULL. */
int mitosis_child_hook(void (*hook)(void *arg), void *arg);

/* ---- resume ---- */

/* Replaces the calling process by a child of seed `id` from the daemon at
 * `host` (MITOSIS's fork_resume_remote): "IP:PORT", "[IPv6]:PORT",
 * "NAME:PORT", or a bare "IP" / "NAME" meaning port MITOSIS_DEFAULT_PORT
 * (7070). The local daemon does the work; it must share the seed host's
 * cluster key.
 *
 * On success it does not return: this process continues from the seed's
 * prepare point (where mitosis_fork_prepare runs the seed's child hooks,
 * see mitosis_child_hook, and returns MITOSIS_CHILD), keeping
 * its pid, parent and descriptors 0-2. It returns a negative code only if the
 * resume failed before the takeover, leaving the process as it was:
 * MITOSIS_E_NOT_FOUND, MITOSIS_E_SEED_GONE (seed host unreachable),
 * MITOSIS_E_AUTH, MITOSIS_E_VERSION, MITOSIS_E_UNSUPPORTED,
 * MITOSIS_E_PERMISSION, MITOSIS_E_CONNECT, MITOSIS_E_IO, MITOSIS_E_USAGE
 * (also: more than one thread). A failure after the takeover kills the
 * process. */
int mitosis_fork_resume_remote(mitosis_conn *conn, const char *host, const char *id);

/* Starts a child of seed `id` from the daemon at `host` (as in
 * mitosis_fork_resume_remote) as a new process on this host, with this
 * process's descriptors 0-2 as its stdin, stdout and stderr. The child is a
 * child of the local daemon, not of the caller: wait for it with
 * mitosis_child_wait, not waitpid. On success stores a handle in *child
 * (NULL on failure) and returns 0; errors as mitosis_fork_resume_remote. */
int mitosis_resume(mitosis_conn *conn, const char *host, const char *id, mitosis_child **child);

/* The child's pid on this host (-1 for NULL). */
pid_t mitosis_child_pid(const mitosis_child *child);

/* How long the resume took, from request to child running, in microseconds
 * (0 for NULL). */
uint64_t mitosis_child_resume_us(const mitosis_child *child);

/* Waits for the child to end and stores a waitpid-style status in *status
 * (unless NULL): test it with WIFEXITED/WEXITSTATUS, WIFSIGNALED/WTERMSIG.
 * Returns 0; or MITOSIS_E_SEED_GONE when mitosis killed the child (a page
 * could not be fetched: seed host gone, seed dropped; or the local daemon
 * stopped), with *status = killed by SIGKILL and the reason in
 * mitosis_last_error(); MITOSIS_E_USAGE for NULL. Calling it again returns
 * the same result. */
int mitosis_child_wait(mitosis_child *child, int *status);

/* Frees the handle (NULL is ignored). A child still running is killed: the
 * daemon sends it SIGKILL when the handle's connection closes (this call does
 * not wait for it to die). */
void mitosis_child_free(mitosis_child *child);

/* ---- seeds ---- */

/* Drops seed `id` of this host (the daemon of `conn`) and frees its memory.
 * A child of it still running is killed if it later needs a page it has not
 * fetched yet.
 * Returns 0, MITOSIS_E_NOT_FOUND (no such seed), MITOSIS_E_PERMISSION,
 * MITOSIS_E_CONNECT, MITOSIS_E_IO or MITOSIS_E_USAGE. */
int mitosis_drop(mitosis_conn *conn, const char *id);

/* ---- errors and version ---- */

/* Static description of `code` ("success" for codes >= 0, "unknown mitosis
 * error code" for anything else not listed above). Never NULL. */
const char *mitosis_strerror(int code);

/* Detailed message of the calling thread's last failed call, e.g.
 * "mitosis_drop: no seed \"73\" on this host". Successful calls leave it as
 * is (like errno). Empty if no call has failed in this thread. Valid until
 * the next failing call in this thread. Never NULL. */
const char *mitosis_last_error(void);

/* The exit status the `mitosis` command uses for `code` (sysexits.h): 0 for
 * codes >= 0, 64 usage/bad request, 65 unsupported, 66 not found, 69 seed
 * gone or no local daemon, 70 internal or I/O, 76 version, 77 auth or
 * permission; 70 for an unknown code. */
int mitosis_exit_code(int code);

/* The library's version, e.g. "0.1.0". */
const char *mitosis_version(void);

/* ---- MITOSIS-compatible names (opt in: #define MITOSIS_COMPAT) ----
 *
 * Thin wrappers with the names of MITOSIS's C library. MITOSIS's keys
 * (handler ids) are integers: they become the seed id in decimal ("73").
 * MITOSIS's machine id becomes the seed host's address. Unlike MITOSIS,
 * fork_prepare returns MITOSIS_CHILD (1) in children, not 0, and errors are
 * negative codes. */
#ifdef MITOSIS_COMPAT
#include <stdio.h>

/* The local daemon ($MITOSIS_SOCKET or the default socket), or NULL. */
static inline mitosis_conn *sopen(void) {
    mitosis_conn *c = NULL;
    return mitosis_open(NULL, &c) == 0 ? c : NULL;
}

static inline int mitosis_compat_id_(int key, char *buf, size_t len) {
    return snprintf(buf, len, "%d", key) > 0 ? 0 : MITOSIS_E_USAGE;
}

/* Prepares under `key`; the seed goes when the caller exits. */
static inline int fork_prepare(mitosis_conn *sd, int key) {
    char id[16];
    int r = mitosis_compat_id_(key, id, sizeof id);
    return r < 0 ? r : mitosis_fork_prepare(sd, id, 0);
}

/* Prepares under `key`, pinned: the seed stays until dropped. */
static inline int fork_prepare_ping(mitosis_conn *sd, int key) {
    char id[16];
    int r = mitosis_compat_id_(key, id, sizeof id);
    return r < 0 ? r : mitosis_fork_prepare(sd, id, MITOSIS_PIN);
}

/* Becomes a child of seed `handler_id` from `host`; returns only on failure. */
static inline int fork_resume_remote(mitosis_conn *sd, const char *host, int handler_id) {
    char id[16];
    int r = mitosis_compat_id_(handler_id, id, sizeof id);
    return r < 0 ? r : mitosis_fork_resume_remote(sd, host, id);
}
#endif /* MITOSIS_COMPAT */

#ifdef __cplusplus
}
#endif

#endif /* MITOSIS_H */
