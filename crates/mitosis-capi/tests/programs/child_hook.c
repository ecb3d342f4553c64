/* mitosis_child_hook against live daemons, run by tests/c_examples.rs on
 * host a (MITOSIS_SOCKET = a's daemon):
 *
 *   child_hook SEED_ID [thread]
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
 *
 * With "thread", a counting thread runs meanwhile and the prepare is called
 * from another thread (main waits for it in pthread_join); both lines end
 * with " threads=<n> counting=<0|1>": the threads in /proc/self/task after
 * the prepare, and whether the counter went on.
 */
#define _GNU_SOURCE
#include <mitosis.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
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

static atomic_long counter;
static atomic_int stop_counting;

static void *count(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_counting)) {
        atomic_fetch_add(&counter, 1);
        usleep(100);
    }
    return NULL;
}

struct prepare_call {
    mitosis_conn *conn;
    const char *id;
    mitosis_prepare_info info;
    int result;
};

static void *prepare_in_thread(void *arg) {
    struct prepare_call *call = arg;
    call->result = mitosis_fork_prepare_ex(call->conn, call->id, MITOSIS_PIN, &call->info);
    return NULL;
}

static int tasks(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: child_hook SEED_ID [thread]\n");
        return 2;
    }
    int threaded = argc == 3 && !strcmp(argv[2], "thread");
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
    pthread_t counter_thread, preparer;
    struct prepare_call call = {.conn = conn, .id = argv[1]};
    if (threaded) {
        if (pthread_create(&counter_thread, NULL, count, NULL)) return 1;
        while (atomic_load(&counter) < 10) usleep(100);
        if (pthread_create(&preparer, NULL, prepare_in_thread, &call) || pthread_join(preparer, NULL)) return 1;
    } else {
        call.result = mitosis_fork_prepare_ex(conn, argv[1], MITOSIS_PIN, &call.info);
    }
    int r = call.result;
    long n = random();
    char extra[64] = "";
    if (threaded) {
        int now = tasks();
        long before = atomic_load(&counter);
        usleep(20000);
        int counting = atomic_load(&counter) > before;
        atomic_store(&stop_counting, 1);
        pthread_join(counter_thread, NULL);
        snprintf(extra, sizeof extra, " threads=%d counting=%d", now, counting);
    }
    if (r == MITOSIS_PARENT) {
        printf("parent log=%s random=%ld%s\n", log_buf, n, extra);
    } else if (r == MITOSIS_CHILD) {
        printf("child log=%s random=%ld pid=%d%s\n", log_buf, n, (int)getpid(), extra);
    } else {
        printf("FAIL prepare: %s (%s)\n", mitosis_last_error(), mitosis_strerror(r));
        return 1;
    }
    fflush(stdout);
    mitosis_close(conn);
    return 0;
}
