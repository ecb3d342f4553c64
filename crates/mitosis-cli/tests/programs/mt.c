/* A multi-threaded program that checks its own threads after a remote fork.
 *
 *   mt        starts 8 threads besides main, each blocked or busy in its own
 *             way, each with its own name, thread-local value and (in the
 *             threads that block in a raw system call) its own pattern in
 *             the vector registers xmm8-15 (ymm8-15 when built with -mavx);
 *             prints "ready <pid>" once all have started. Then:
 *
 *     main     waits on a raw futex (pattern) until the check is over,
 *              joins every thread and prints "joined 8", exit 0
 *     reader   blocks in a raw read(0) (pattern); on the line "check" it
 *              runs the check below
 *     futex    waits on a raw futex (pattern) for the check's wake-up
 *     cond     waits on a condition variable
 *     mutex    blocks on a mutex the reader holds
 *     sleeper  sleeps 200 ms at a time in a raw nanosleep (pattern)
 *     epoll    waits 10 ms at a time in epoll_wait on an idle eventfd
 *     counter  runs an LCG in registers, counting its steps
 *     spawner  creates and joins short-lived threads
 *
 *   Pending at the prepare: SIGUSR2 for the futex thread (thread-directed)
 *   and SIGRTMIN+1 with value 42 for the process, both blocked everywhere.
 *
 *   The check (all from the reader): wake the futex thread and the
 *   condition, unlock the mutex, tell the rest to stop; every thread then
 *   checks itself (its registers' pattern, its thread-local value and
 *   name, that signals reach it with pthread_kill, its own work) and
 *   reports "<name> ok" or "<name> FAIL <why>". The reader prints the
 *   reports in thread order, then "tasks <n>" (threads in /proc/self/task)
 *   and, per thread, "tid <name> same" or "tid <name> changed" (whether
 *   gettid() is the tid the thread had when it started).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define THREADS 9 /* main + 8 */
enum { MAIN, READER, FUTEX, COND, MUTEX, SLEEPER, EPOLL, COUNTER, SPAWNER };
static const char *names[THREADS] = {"main", "reader", "futex", "cond", "mutex", "sleeper", "epoll", "counter", "spawner"};

static pthread_t handles[THREADS];
static pid_t tids[THREADS], tids_now[THREADS];
static char reports[THREADS][160];
static atomic_int started, reported, stop_work;
static int futex_go, futex_done;
static pthread_mutex_t cond_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int cond_go;
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static __thread unsigned long tls_mark;
static __thread volatile sig_atomic_t usr1_seen;

/* 8 vector registers' worth of pattern: 256 bytes (ymm) or 128 (xmm). */
typedef struct {
    unsigned char b[256];
} bank;

#ifdef __AVX__
#define VLOAD(i, off) "vmovdqu " #off "(%[in]), %%ymm" #i "\n\t"
#define VSTORE(i, off) "vmovdqu %%ymm" #i ", " #off "(%[out])\n\t"
#define STEP_BYTES 32
#else
#define VLOAD(i, off) "movdqu " #off "(%[in]), %%xmm" #i "\n\t"
#define VSTORE(i, off) "movdqu %%xmm" #i ", " #off "(%[out])\n\t"
#define STEP_BYTES 16
#endif

/* A raw system call with a pattern in xmm/ymm 8-15 across it; the registers
 * after the call go to `out`. A remote fork caught during the call must give
 * the child the same registers. */
static long syscall_with_pattern(long nr, long a1, long a2, long a3, long a4, const bank *in, bank *out) {
    long ret;
    register long r10 __asm__("r10") = a4;
    __asm__ volatile(
#ifdef __AVX__
        VLOAD(8, 0) VLOAD(9, 32) VLOAD(10, 64) VLOAD(11, 96) VLOAD(12, 128) VLOAD(13, 160) VLOAD(14, 192) VLOAD(15, 224)
        "syscall\n\t"
        VSTORE(8, 0) VSTORE(9, 32) VSTORE(10, 64) VSTORE(11, 96) VSTORE(12, 128) VSTORE(13, 160) VSTORE(14, 192) VSTORE(15, 224)
#else
        VLOAD(8, 0) VLOAD(9, 16) VLOAD(10, 32) VLOAD(11, 48) VLOAD(12, 64) VLOAD(13, 80) VLOAD(14, 96) VLOAD(15, 112)
        "syscall\n\t"
        VSTORE(8, 0) VSTORE(9, 16) VSTORE(10, 32) VSTORE(11, 48) VSTORE(12, 64) VSTORE(13, 80) VSTORE(14, 96) VSTORE(15, 112)
#endif
        : "=a"(ret)
        : "0"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), [in] "r"(in), [out] "r"(out)
        : "rcx", "r11", "memory", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    return ret;
}

static void fill(bank *p, int who) {
    for (int i = 0; i < (int)sizeof p->b; i++) p->b[i] = (unsigned char)(who * 37 + i * 11 + 5);
}

/* The registers came back as they went in. */
static int same(const bank *a, const bank *b) { return memcmp(a->b, b->b, 8 * STEP_BYTES) == 0; }

static void report(int who, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reports[who], sizeof reports[who], fmt, ap);
    va_end(ap);
    atomic_fetch_add(&reported, 1);
}

static long futex(int *addr, int op, int val) { return syscall(SYS_futex, addr, op, val, NULL, NULL, 0); }

static void on_usr1(int sig) {
    (void)sig;
    usr1_seen = 1;
}

/* What every thread checks of itself: its thread-local value, its name,
 * that a signal sent to it with pthread_kill (glibc's cached tid) arrives. */
static const char *common_checks(int who) {
    static __thread char why[96];
    if (tls_mark != 0x1000ul + (unsigned long)who * 7919ul) return "thread-local value lost";
    char path[64], comm[32] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)syscall(SYS_gettid));
    FILE *f = fopen(path, "r");
    if (!f || !fgets(comm, sizeof comm, f)) {
        if (f) fclose(f);
        return "no /proc/self/task entry";
    }
    fclose(f);
    comm[strcspn(comm, "\n")] = 0;
    if (strcmp(comm, names[who])) {
        snprintf(why, sizeof why, "name is %s", comm);
        return why;
    }
    usr1_seen = 0;
    int e = pthread_kill(pthread_self(), SIGUSR1);
    if (e) {
        snprintf(why, sizeof why, "pthread_kill: %s", strerror(e));
        return why;
    }
    for (int i = 0; i < 1000 && !usr1_seen; i++) usleep(1000);
    if (!usr1_seen) return "SIGUSR1 never arrived";
    return NULL;
}

static void start(int who) {
    tls_mark = 0x1000ul + (unsigned long)who * 7919ul;
    tids[who] = (pid_t)syscall(SYS_gettid);
    if (who != MAIN) pthread_setname_np(pthread_self(), names[who]);
    atomic_fetch_add(&started, 1);
}

/* After its report a thread waits for the end (so /proc/self/task counts all). */
static void wait_done(void) {
    while (!__atomic_load_n(&futex_done, __ATOMIC_SEQ_CST)) futex(&futex_done, FUTEX_WAIT_PRIVATE, 0);
}

static void finish(int who, const char *own_failure) {
    tids_now[who] = (pid_t)syscall(SYS_gettid);
    const char *why = own_failure ? own_failure : common_checks(who);
    if (why) report(who, "%s FAIL %s", names[who], why);
    else report(who, "%s ok", names[who]);
    wait_done();
}

static void *futex_thread(void *arg) {
    (void)arg;
    start(FUTEX);
    bank in, out;
    fill(&in, FUTEX);
    const char *bad = NULL;
    while (!__atomic_load_n(&futex_go, __ATOMIC_SEQ_CST)) {
        long r = syscall_with_pattern(SYS_futex, (long)&futex_go, FUTEX_WAIT_PRIVATE, 0, 0, &in, &out);
        if (!same(&in, &out)) bad = "vector registers changed across futex()";
        if (r < 0 && r != -EAGAIN && r != -EINTR) bad = "futex() failed";
    }
    /* Its own pending signal, sent before the prepare. */
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    struct timespec now = {0, 0};
    if (!bad && sigtimedwait(&usr2, NULL, &now) != SIGUSR2) bad = "its pending SIGUSR2 was lost";
    finish(FUTEX, bad);
    return NULL;
}

static void *cond_thread(void *arg) {
    (void)arg;
    start(COND);
    pthread_mutex_lock(&cond_lock);
    while (!cond_go) pthread_cond_wait(&cond, &cond_lock);
    pthread_mutex_unlock(&cond_lock);
    finish(COND, NULL);
    return NULL;
}

static void *mutex_thread(void *arg) {
    (void)arg;
    start(MUTEX);
    int e = pthread_mutex_lock(&held);
    if (!e) pthread_mutex_unlock(&held);
    finish(MUTEX, e ? "pthread_mutex_lock failed" : NULL);
    return NULL;
}

static void *sleeper_thread(void *arg) {
    (void)arg;
    start(SLEEPER);
    bank in, out;
    fill(&in, SLEEPER);
    const char *bad = NULL;
    long naps = 0;
    do {
        struct timespec ts = {0, 200 * 1000 * 1000};
        long r = syscall_with_pattern(SYS_nanosleep, (long)&ts, 0, 0, 0, &in, &out);
        if (!same(&in, &out)) bad = "vector registers changed across nanosleep()";
        if (r < 0 && r != -EINTR) bad = "nanosleep() failed";
        naps++;
    } while (!atomic_load(&stop_work));
    finish(SLEEPER, naps > 0 ? bad : "never slept");
    return NULL;
}

static int epoll_fd;

static void *epoll_thread(void *arg) {
    (void)arg;
    start(EPOLL);
    const char *bad = NULL;
    int last = 0;
    /* Waits until told to stop, then once more: the last wait is after the check began. */
    while (!bad && !last) {
        last = atomic_load(&stop_work);
        struct epoll_event ev;
        int n = epoll_wait(epoll_fd, &ev, 1, last ? 0 : 10);
        if (n < 0 && errno != EINTR) bad = errno == EBADF ? "epoll_wait: its epoll descriptor is gone" : "epoll_wait failed";
        if (n > 0) bad = "an idle eventfd became readable";
    }
    finish(EPOLL, bad);
    return NULL;
}

/* The step of the counter's LCG, also used to check it from scratch. */
static inline unsigned long lcg(unsigned long x) { return x * 6364136223846793005ul + 1442695040888963407ul; }

static void *counter_thread(void *arg) {
    (void)arg;
    start(COUNTER);
    unsigned long x = 1, n = 0;
    /* x and n live in registers: a child that lost them would not match. */
    while (!atomic_load_explicit(&stop_work, memory_order_relaxed)) {
        for (int i = 0; i < 4096; i++) x = lcg(x);
        n += 4096;
    }
    unsigned long y = 1;
    for (unsigned long i = 0; i < n; i++) y = lcg(y);
    finish(COUNTER, y == x ? NULL : "its computation went wrong");
    return NULL;
}

static atomic_long spawned_runs;

static void *short_lived(void *arg) {
    (void)arg;
    atomic_fetch_add(&spawned_runs, 1);
    return NULL;
}

static void *spawner_thread(void *arg) {
    (void)arg;
    start(SPAWNER);
    const char *bad = NULL;
    long made = 0;
    do {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) || pthread_join(t, NULL)) {
            bad = "pthread_create or pthread_join failed";
            break;
        }
        made++;
    } while (!atomic_load(&stop_work));
    finish(SPAWNER, bad ? bad : atomic_load(&spawned_runs) == made ? NULL : "a short-lived thread did not run");
    return NULL;
}

static int count_tasks(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void *reader_thread(void *arg) {
    (void)arg;
    start(READER);
    pthread_mutex_lock(&held);
    bank in, out;
    fill(&in, READER);
    char line[64];
    long n;
    do {
        n = syscall_with_pattern(SYS_read, 0, (long)line, sizeof line - 1, 0, &in, &out);
    } while (n == -EINTR);
    const char *bad = NULL;
    if (!same(&in, &out)) bad = "vector registers changed across read()";
    if (n <= 0 || strncmp(line, "check", 5)) bad = "no check command";
    /* The process's pending signal, with its value. */
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN + 1);
    siginfo_t si;
    struct timespec now = {0, 0};
    if (!bad && (sigtimedwait(&rt, &si, &now) != SIGRTMIN + 1 || si.si_value.sival_int != 42)) bad = "the process's pending signal was lost";
    /* Wake everyone. */
    __atomic_store_n(&futex_go, 1, __ATOMIC_SEQ_CST);
    futex(&futex_go, FUTEX_WAKE_PRIVATE, 1);
    pthread_mutex_lock(&cond_lock);
    cond_go = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&cond_lock);
    pthread_mutex_unlock(&held);
    atomic_store(&stop_work, 1);
    /* Every thread but main reports; then the reader itself. */
    while (atomic_load(&reported) < THREADS - 2) usleep(1000);
    const char *why = bad ? bad : common_checks(READER);
    if (why) snprintf(reports[READER], sizeof reports[READER], "reader FAIL %s", why);
    else snprintf(reports[READER], sizeof reports[READER], "reader ok");
    for (int i = 1; i < THREADS; i++) printf("%s\n", reports[i]);
    printf("tasks %d\n", count_tasks());
    tids_now[MAIN] = getpid();
    tids_now[READER] = (pid_t)syscall(SYS_gettid);
    for (int i = 0; i < THREADS; i++) printf("tid %s %s\n", names[i], tids[i] == tids_now[i] ? "same" : "changed");
    fflush(stdout);
    __atomic_store_n(&futex_done, 1, __ATOMIC_SEQ_CST);
    futex(&futex_done, FUTEX_WAKE_PRIVATE, THREADS);
    return NULL;
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    /* Blocked in every thread (they inherit it): they stay pending. */
    sigset_t held_signals;
    sigemptyset(&held_signals);
    sigaddset(&held_signals, SIGUSR2);
    sigaddset(&held_signals, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &held_signals, NULL);
    start(MAIN);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    int idle = eventfd(0, EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (epoll_fd < 0 || idle < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, idle, &ev)) return 2;
    void *(*bodies[THREADS])(void *) = {NULL, reader_thread, futex_thread, cond_thread, mutex_thread,
                                        sleeper_thread, epoll_thread, counter_thread, spawner_thread};
    /* The reader first: it holds the mutex before the mutex thread asks. */
    if (pthread_create(&handles[READER], NULL, bodies[READER], NULL)) return 3;
    while (atomic_load(&started) < 2) usleep(100);
    for (int i = FUTEX; i < THREADS; i++)
        if (pthread_create(&handles[i], NULL, bodies[i], NULL)) return 3;
    while (atomic_load(&started) < THREADS) usleep(100);
    union sigval v = {.sival_int = 42};
    if (pthread_kill(handles[FUTEX], SIGUSR2) || sigqueue(getpid(), SIGRTMIN + 1, v)) return 4;
    printf("ready %d\n", getpid());
    fflush(stdout);
    bank in, out;
    fill(&in, MAIN);
    const char *bad = NULL;
    while (!__atomic_load_n(&futex_done, __ATOMIC_SEQ_CST)) {
        long r = syscall_with_pattern(SYS_futex, (long)&futex_done, FUTEX_WAIT_PRIVATE, 0, 0, &in, &out);
        if (!same(&in, &out)) bad = "vector registers changed across futex()";
        if (r < 0 && r != -EAGAIN && r != -EINTR) bad = "futex() failed";
    }
    int joined = 0;
    for (int i = 1; i < THREADS; i++) joined += pthread_join(handles[i], NULL) == 0;
    printf("main %s\njoined %d\n", bad ? bad : "ok", joined);
    return 0;
}
