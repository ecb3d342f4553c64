/* Checks of the C API against live daemons, run by tests/c_examples.rs on
 * host b (MITOSIS_SOCKET = b's daemon):
 *
 *   capi_check <seed host> <short seed id> <long seed id> <seed host's socket>
 *
 * Both seeds are simple_parent's, pinned: children of <short seed> print
 * "time 1" .. "time 3" and exit 0; children of <long seed> count forever.
 * Prints "ok <check>" for each check that holds and "FAIL <check>: ..." for
 * each that does not, then "done"; exits 1 if any failed.
 */
#define _GNU_SOURCE
#define MITOSIS_COMPAT
#include <mitosis.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define CHECK(name, cond, ...)                                                   \
    do {                                                                         \
        if (cond) {                                                              \
            printf("ok %s\n", name);                                             \
        } else {                                                                 \
            printf("FAIL %s: ", name);                                           \
            printf(__VA_ARGS__);                                                 \
            printf(" (last error: %s)\n", mitosis_last_error());                 \
            failures++;                                                          \
        }                                                                        \
        fflush(stdout);                                                          \
    } while (0)

static int has(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}, rem;
    while (nanosleep(&t, &rem) != 0 && errno == EINTR) t = rem;
}

/* Whether pid is gone or a zombie. */
static int dead(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] == 'Z';
}

static int pipe_fds[2];
static void *blocked_thread(void *arg) {
    char c;
    (void)arg;
    while (read(pipe_fds[0], &c, 1) < 0 && errno == EINTR) {}
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: capi_check SEED_HOST SHORT_ID LONG_ID SEED_HOST_SOCKET\n");
        return 2;
    }
    const char *host = argv[1], *short_id = argv[2], *long_id = argv[3], *seed_socket = argv[4];
    int r, status;

    /* Every code has its own static text and the CLI's exit status. */
    int codes[] = {MITOSIS_E_NOT_FOUND, MITOSIS_E_AUTH,     MITOSIS_E_VERSION,  MITOSIS_E_BAD_REQUEST,
                   MITOSIS_E_PERMISSION, MITOSIS_E_UNSUPPORTED, MITOSIS_E_SEED_GONE, MITOSIS_E_INTERNAL,
                   MITOSIS_E_CONNECT,   MITOSIS_E_IO,       MITOSIS_E_USAGE,     MITOSIS_E_BUSY};
    size_t ncodes = sizeof codes / sizeof codes[0];
    int texts_ok = strcmp(mitosis_strerror(MITOSIS_OK), "success") == 0 &&
                   strcmp(mitosis_strerror(12345 * -1), "unknown mitosis error code") == 0;
    for (size_t i = 0; i < ncodes; i++) {
        const char *t = mitosis_strerror(codes[i]);
        texts_ok = texts_ok && codes[i] < 0 && t && *t && strcmp(t, "success") != 0 &&
                   strcmp(t, mitosis_strerror(-12345)) != 0;
        for (size_t j = 0; j < i; j++) texts_ok = texts_ok && strcmp(t, mitosis_strerror(codes[j])) != 0;
    }
    CHECK("strerror", texts_ok, "texts missing or shared");
    CHECK("exit codes",
          mitosis_exit_code(MITOSIS_OK) == 0 && mitosis_exit_code(MITOSIS_CHILD) == 0 &&
              mitosis_exit_code(MITOSIS_E_NOT_FOUND) == 66 && mitosis_exit_code(MITOSIS_E_CONNECT) == 69 &&
              mitosis_exit_code(MITOSIS_E_USAGE) == 64 && mitosis_exit_code(MITOSIS_E_SEED_GONE) == 69,
          "unexpected exit codes");

    /* No daemon behind that socket. */
    mitosis_conn *bad = (mitosis_conn *)codes; /* must be cleared */
    r = mitosis_open("/nonexistent/mitosis.sock", &bad);
    CHECK("open without a daemon", r == MITOSIS_E_CONNECT && bad == NULL &&
          has(mitosis_last_error(), "mitosis_open: ") && has(mitosis_last_error(), "/nonexistent/mitosis.sock"),
          "r=%d", r);

    mitosis_conn *conn = NULL;
    r = mitosis_open(NULL, &conn);
    CHECK("open $MITOSIS_SOCKET", r == 0 && conn != NULL, "r=%d", r);
    if (!conn) return 1;

    r = mitosis_drop(conn, NULL);
    CHECK("NULL id", r == MITOSIS_E_USAGE && has(mitosis_last_error(), "id is NULL"), "r=%d", r);
    r = mitosis_fork_prepare(conn, "x", 4);
    CHECK("unknown flag", r == MITOSIS_E_USAGE && has(mitosis_last_error(), "unknown flags"), "r=%d", r);
    r = mitosis_fork_prepare(conn, "bad/id", 0);
    CHECK("invalid seed id", r == MITOSIS_E_BAD_REQUEST && has(mitosis_last_error(), "bad/id"), "r=%d", r);

    /* A second thread: this process cannot be replaced by a child in place. */
    pthread_t th;
    if (pipe(pipe_fds) != 0 || pthread_create(&th, NULL, blocked_thread, NULL) != 0) return 1;
    r = mitosis_fork_resume_remote(conn, host, "mt");
    CHECK("multi-threaded resume in place", r == MITOSIS_E_USAGE && has(mitosis_last_error(), "threads"), "r=%d", r);
    close(pipe_fds[1]);
    pthread_join(th, NULL);
    close(pipe_fds[0]);

    /* Unknown seeds, in place and as a new child: the process stays itself. */
    r = mitosis_fork_resume_remote(conn, host, "no-such-seed");
    CHECK("resume in place, unknown seed",
          r == MITOSIS_E_NOT_FOUND && has(mitosis_last_error(), "mitosis_fork_resume_remote: ") &&
              has(mitosis_last_error(), "\"no-such-seed\""),
          "r=%d", r);
    mitosis_child *child = (mitosis_child *)codes; /* must be cleared */
    r = mitosis_resume(conn, host, "no-such-seed", &child);
    CHECK("resume, unknown seed", r == MITOSIS_E_NOT_FOUND && child == NULL && has(mitosis_last_error(), "no-such-seed"),
          "r=%d", r);
    r = mitosis_fork_resume_remote(conn, "127.0.0.1:1", short_id);
    CHECK("resume from an unreachable seed host",
          r == MITOSIS_E_SEED_GONE && has(mitosis_last_error(), "cannot reach seed host 127.0.0.1:1"), "r=%d", r);

    /* MITOSIS's names. */
    mitosis_conn *sd = sopen();
    CHECK("compat sopen", sd != NULL, "NULL");
    r = fork_resume_remote(sd, host, 424242);
    CHECK("compat fork_resume_remote", r == MITOSIS_E_NOT_FOUND && has(mitosis_last_error(), "\"424242\""), "r=%d", r);
    mitosis_close(sd);

    /* A child that runs to its end: its output is ours, its status is waitpid's. */
    printf("begin short child\n");
    fflush(stdout);
    child = NULL;
    r = mitosis_resume(conn, host, short_id, &child);
    pid_t pid = mitosis_child_pid(child);
    CHECK("resume a new child", r == 0 && child && pid > 0 && pid != getpid() && mitosis_child_resume_us(child) > 0,
          "r=%d pid=%d", r, (int)pid);
    if (!child) return 1;
    status = -1;
    r = mitosis_child_wait(child, &status);
    CHECK("child exited 0", r == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "r=%d status=%#x", r, status);
    int again = -1;
    r = mitosis_child_wait(child, &again);
    CHECK("wait again", r == 0 && again == status, "r=%d status=%#x", r, again);
    mitosis_child_free(child);

    /* A child killed by a signal. */
    r = mitosis_resume(conn, host, long_id, &child);
    pid = mitosis_child_pid(child);
    CHECK("resume a long child", r == 0 && pid > 0, "r=%d", r);
    if (!child) return 1;
    CHECK("kill it", kill(pid, SIGTERM) == 0, "errno %d", errno);
    r = mitosis_child_wait(child, &status);
    CHECK("child killed by SIGTERM", r == 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
          "r=%d status=%#x", r, status);
    mitosis_child_free(child);

    /* Freeing the handle of a running child kills it. */
    r = mitosis_resume(conn, host, long_id, &child);
    pid = mitosis_child_pid(child);
    CHECK("resume another long child", r == 0 && pid > 0 && !dead(pid), "r=%d", r);
    if (!child) return 1;
    mitosis_child_free(child);
    int gone = 0;
    for (int i = 0; i < 1000 && !gone; i++) {
        gone = dead(pid);
        if (!gone) sleep_ms(10);
    }
    CHECK("free kills a running child", gone, "child %d still alive after 10 s", (int)pid);

    /* Drop on the seed host: once, then it is gone. */
    mitosis_conn *seed_host = NULL;
    r = mitosis_open(seed_socket, &seed_host);
    CHECK("open the seed host's daemon", r == 0, "r=%d", r);
    if (!seed_host) return 1;
    r = mitosis_drop(seed_host, short_id);
    CHECK("drop", r == 0, "r=%d", r);
    r = mitosis_drop(seed_host, short_id);
    CHECK("drop again", r == MITOSIS_E_NOT_FOUND && has(mitosis_last_error(), "mitosis_drop: ") &&
          has(mitosis_last_error(), short_id), "r=%d", r);
    r = mitosis_resume(conn, host, short_id, &child);
    CHECK("resume a dropped seed", r == MITOSIS_E_NOT_FOUND && child == NULL, "r=%d", r);
    mitosis_close(seed_host);
    mitosis_close(conn);

    printf("done\n");
    return failures ? 1 : 0;
}
