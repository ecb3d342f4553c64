/* mitosis_child_hook against live daemons, run by tests/c_examples.rs on
 * host a (MITOSIS_SOCKET = a's daemon):
 *
 *   child_hook SEED_ID
 *
 * Registers hooks, then prepares itself as seed SEED_ID (pinned). The hooks
 * append to a log in memory: "a", then "b:<arg>" (their registration order);
 * hook "b" also reseeds random() from getrandom(2), as a real program would.
 * Then it draws a number from random().
 *
 * Parent: prints "parent log=<log> random=<n>" (the log is empty: hooks never
 * run there) and exits 0; the pinned seed stays.
 * Every child: prints "child log=<log> random=<n> pid=<getpid>" and exits 0.
 * Either side exits 1 after "FAIL ..." if something else is wrong.
 */
#define _GNU_SOURCE
#include <mitosis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static char log_buf[256];

static void append(const char *s) {
    strncat(log_buf, s, sizeof log_buf - strlen(log_buf) - 1);
}

static void hook_a(void *arg) {
    (void)arg;
    append("a");
}

static void hook_b(void *arg) {
    unsigned seed;
    append("b:");
    append((const char *)arg);
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        printf("FAIL getrandom\n");
        exit(1);
    }
    srandom(seed);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: child_hook SEED_ID\n");
        return 2;
    }
    static char tag[] = "tag";
    mitosis_conn *conn = NULL;
    if (mitosis_open(NULL, &conn) != 0) {
        printf("FAIL open: %s\n", mitosis_last_error());
        return 1;
    }
    if (mitosis_child_hook(NULL, NULL) != MITOSIS_E_USAGE || !strstr(mitosis_last_error(), "hook is NULL")) {
        printf("FAIL a NULL hook is a usage error: %s\n", mitosis_last_error());
        return 1;
    }
    if (mitosis_child_hook(hook_a, NULL) != 0 || mitosis_child_hook(hook_b, tag) != 0) {
        printf("FAIL register: %s\n", mitosis_last_error());
        return 1;
    }
    srandom(42); /* the same state in every child, unless a hook reseeds it */
    fflush(stdout);
    mitosis_prepare_info info;
    int r = mitosis_fork_prepare_ex(conn, argv[1], MITOSIS_PIN, &info);
    long n = random();
    if (r == MITOSIS_PARENT) {
        printf("parent log=%s random=%ld\n", log_buf, n);
    } else if (r == MITOSIS_CHILD) {
        printf("child log=%s random=%ld pid=%d\n", log_buf, n, (int)getpid());
    } else {
        printf("FAIL prepare: %s (%s)\n", mitosis_last_error(), mitosis_strerror(r));
        return 1;
    }
    fflush(stdout);
    mitosis_close(conn);
    return 0;
}
