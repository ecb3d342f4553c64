/* A multi-threaded program: starts N-1 extra threads (argv[1], default 2
 * threads in all) that block forever, prints "ready <pid>" and waits on
 * stdin, answering each line with "still here". With argv[2] "vfork", one
 * more thread calls vfork() and stays there: its child sleeps a minute
 * before it exits (a thread waiting in vfork notices no signal but SIGKILL). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *idle(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static void *vforker(void *arg) {
    (void)arg;
    if (vfork() == 0) {
        /* Only system calls in the child of vfork: it shares our memory.
         * It dies with the thread that made it. */
        syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
        struct timespec minute = {60, 0};
        syscall(SYS_nanosleep, &minute, NULL);
        syscall(SYS_exit, 0);
    }
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2;
    for (int i = 1; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, idle, NULL) != 0) return 1;
    }
    if (argc > 2 && !strcmp(argv[2], "vfork")) {
        pthread_t t;
        if (pthread_create(&t, NULL, vforker, NULL) != 0) return 1;
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        printf("still here\n");
        fflush(stdout);
    }
    return 0;
}
