/* `mitosis bench threads`'s seed: N threads in all (argv[1]), the N-1 extra
 * ones blocked in a futex wait, each with its own thread-local value.
 * Prints "ready <pid>" and reads stdin lines; on "check" it prints
 * "check <tasks> <good>": the threads in /proc/self/task and how many of
 * the extra threads, woken one by one, saw their own value and tid
 * (pthread_kill(thread, 0) reaches each: glibc's cached tid is right).
 * On "exit" it exits 0. */
#define _GNU_SOURCE
#include <dirent.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int go;
static atomic_int started, good;
static __thread long mine;

static void *worker(void *arg) {
    long me = (long)arg;
    mine = me * 1000003;
    atomic_fetch_add(&started, 1);
    while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST)) syscall(SYS_futex, &go, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    if (mine == me * 1000003) atomic_fetch_add(&good, 1);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    pthread_t *t = calloc((size_t)n, sizeof *t);
    for (long i = 1; i < n; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i)) return 2;
    while (atomic_load(&started) < n - 1) usleep(100);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "exit", 4)) return 0;
        if (strncmp(line, "check", 5)) continue;
        int tasks = 0;
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        while (d && (e = readdir(d))) tasks += e->d_name[0] != '.';
        if (d) closedir(d);
        int reachable = 0;
        for (int i = 1; i < n; i++) reachable += pthread_kill(t[i], 0) == 0;
        __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
        for (int i = 1; i < n; i++) pthread_join(t[i], NULL);
        printf("check %d %d\n", tasks, atomic_load(&good) == n - 1 && reachable == n - 1 ? n - 1 : -1);
        fflush(stdout);
    }
    return 0;
}
