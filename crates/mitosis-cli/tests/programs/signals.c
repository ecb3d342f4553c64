/* Signal state across a remote fork.
 *
 *   signals altstack    SIGUSR1 handler with SA_ONSTACK on an alternate
 *                       signal stack set with sigaltstack
 *   signals noaltstack  the same handler, but no alternate stack (so it
 *                       must run on the normal stack)
 *
 * Both block SIGUSR2, ignore SIGPIPE, and install the SIGUSR1 handler with
 * SA_RESTART|SA_SIGINFO|SA_ONSTACK and SIGINT in its mask; install a SIGTRAP
 * handler, block SIGTRAP and leave one pending (the traps of a tracer's
 * single steps are forced SIGTRAPs, which reset a blocked handler); then
 * print "ready <pid>" and answer stdin lines:
 *   state   "state <description of mask, dispositions, altstack>"
 *   raise   raise(SIGUSR1); the handler prints "usr1 <where it ran>", then
 *           "raised <count>"
 *   trap    "trap pending <0|1>", then unblocks SIGTRAP (the pending one is
 *           handled), raises another and blocks it again: "trap handled <n>"
 *   exit    exit 0
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALT_SIZE (64 * 1024)

static char *alt;
static volatile sig_atomic_t count;
static uintptr_t main_sp;

static void handler(int sig, siginfo_t *info, void *uc) {
    (void)sig; (void)info; (void)uc;
    char here;
    uintptr_t sp = (uintptr_t)&here;
    stack_t ss;
    sigaltstack(NULL, &ss);
    const char *where;
    if (alt && sp >= (uintptr_t)alt && sp < (uintptr_t)alt + ALT_SIZE)
        where = "usr1 on-our-altstack\n";
    else if (sp < main_sp && main_sp - sp < (1u << 20))
        where = "usr1 on-main-stack\n";
    else
        where = "usr1 on-unknown-stack\n";
    count++;
    write(1, where, strlen(where));
}

static volatile sig_atomic_t traps;
static void on_trap(int sig) { (void)sig; traps++; }

static void trap(void) {
    sigset_t pending, only;
    sigpending(&pending);
    printf("trap pending %d\n", sigismember(&pending, SIGTRAP));
    fflush(stdout);
    sigemptyset(&only);
    sigaddset(&only, SIGTRAP);
    sigprocmask(SIG_UNBLOCK, &only, NULL);
    raise(SIGTRAP);
    sigprocmask(SIG_BLOCK, &only, NULL);
    printf("trap handled %d\n", (int)traps);
    fflush(stdout);
}

static void state(void) {
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    struct sigaction u1, pipe_, u2;
    sigaction(SIGUSR1, NULL, &u1);
    sigaction(SIGPIPE, NULL, &pipe_);
    sigaction(SIGUSR2, NULL, &u2);
    stack_t ss;
    sigaltstack(NULL, &ss);
    printf("state usr2-blocked=%d usr1-blocked=%d pipe=%s usr2=%s usr1-handler=%d flags=%#x samask-int=%d "
           "altstack=%s size=%zu\n",
           sigismember(&cur, SIGUSR2), sigismember(&cur, SIGUSR1),
           pipe_.sa_handler == SIG_IGN ? "ignored" : "other",
           u2.sa_handler == SIG_DFL ? "default" : "other",
           u1.sa_sigaction == handler, u1.sa_flags & (SA_RESTART | SA_SIGINFO | SA_ONSTACK),
           sigismember(&u1.sa_mask, SIGINT),
           (ss.ss_flags & SS_DISABLE) ? "disabled" : (alt && ss.ss_sp == alt ? "ours" : "other"),
           (ss.ss_flags & SS_DISABLE) ? (size_t)0 : ss.ss_size);
    fflush(stdout);
}

int main(int argc, char **argv) {
    char anchor;
    main_sp = (uintptr_t)&anchor;
    int use_alt = argc > 1 && !strcmp(argv[1], "altstack");
    if (use_alt) {
        alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        stack_t ss = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
        if (sigaltstack(&ss, NULL) != 0) return 1;
    } else {
        stack_t ss = {.ss_flags = SS_DISABLE};
        sigaltstack(&ss, NULL);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_RESTART | SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGTRAP);
    sigprocmask(SIG_BLOCK, &block, NULL);
    signal(SIGTRAP, on_trap);
    raise(SIGTRAP);

    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "state", 5)) {
            state();
        } else if (!strncmp(line, "raise", 5)) {
            raise(SIGUSR1);
            printf("raised %d\n", (int)count);
            fflush(stdout);
        } else if (!strncmp(line, "trap", 4)) {
            trap();
        } else if (!strncmp(line, "exit", 4)) {
            return 0;
        }
    }
    return 0;
}
