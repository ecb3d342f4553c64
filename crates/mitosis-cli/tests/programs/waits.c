/* Prepared while blocked in a waiting system call (argv[1]):
 *   poll, poll-timeout, ppoll, select, pselect: wait for stdin to be readable
 *   nanosleep: sleep 1.5 s (relative, resumed with the remaining time on EINTR)
 *   clock-abs: sleep until 1.5 s after start (absolute CLOCK_MONOTONIC)
 *   futex: FUTEX_WAIT with a 1.5 s timeout on a word nobody wakes
 * Every mode handles EINTR as a correct program does (by waiting again).
 * Prints "ready <pid>", waits, then (sleep modes) prints "<mode> woke", reads
 * a line from stdin and prints "<mode> ok <line>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000ll + t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "poll";
    int64_t start = now_ns();
    printf("ready %d\n", getpid());
    fflush(stdout);
    int r;
    if (!strcmp(mode, "poll") || !strcmp(mode, "poll-timeout")) {
        int timeout = strcmp(mode, "poll") ? 60000 : -1;
        struct pollfd p = {.fd = 0, .events = POLLIN};
        while ((r = poll(&p, 1, timeout)) < 0 && errno == EINTR) {}
        if (r != 1) { printf("%s FAILED %d\n", mode, r); return 1; }
    } else if (!strcmp(mode, "ppoll")) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        struct timespec t = {60, 0};
        while ((r = ppoll(&p, 1, &t, NULL)) < 0 && errno == EINTR) {}
        if (r != 1) { printf("%s FAILED %d\n", mode, r); return 1; }
    } else if (!strcmp(mode, "select") || !strcmp(mode, "pselect")) {
        for (;;) {
            fd_set s;
            FD_ZERO(&s);
            FD_SET(0, &s);
            if (!strcmp(mode, "select")) {
                struct timeval t = {60, 0};
                r = select(1, &s, NULL, NULL, &t);
            } else {
                struct timespec t = {60, 0};
                r = pselect(1, &s, NULL, NULL, &t, NULL);
            }
            if (!(r < 0 && errno == EINTR)) break;
        }
        if (r != 1) { printf("%s FAILED %d\n", mode, r); return 1; }
    } else if (!strcmp(mode, "nanosleep")) {
        struct timespec req = {1, 500000000}, rem;
        while (nanosleep(&req, &rem) < 0 && errno == EINTR) req = rem;
        printf("%s woke\n", mode);
    } else if (!strcmp(mode, "clock-abs")) {
        int64_t deadline = start + 1500000000ll;
        struct timespec t = {deadline / 1000000000ll, deadline % 1000000000ll};
        while ((r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL)) == EINTR) {}
        printf("%s woke late=%d\n", mode, now_ns() >= deadline);
    } else if (!strcmp(mode, "futex")) {
        static uint32_t word = 0;
        int64_t deadline = start + 1500000000ll;
        for (;;) {
            int64_t left = deadline - now_ns();
            if (left <= 0) break;
            struct timespec t = {left / 1000000000ll, left % 1000000000ll};
            syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &t, NULL, 0);
        }
        printf("%s woke\n", mode);
    } else {
        printf("unknown mode %s\n", mode);
        return 2;
    }
    fflush(stdout);
    char line[64] = "";
    if (!fgets(line, sizeof line, stdin)) return 1;
    line[strcspn(line, "\n")] = 0;
    printf("%s ok %s\n", mode, line);
    return 0;
}
