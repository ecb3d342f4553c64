/* simple_parent: MITOSIS's simple_parent, on the mitosis C API.
 *
 * Prints an increasing counter on stdout, one "time N" line per interval.
 * After the first tick ("time 0") it prepares itself as seed <handler_id>
 * with the local daemon ($MITOSIS_SOCKET, or /run/mitosis/mitosis.sock).
 * Every child resumed from the seed, on any host (see simple_child.c),
 * continues from that point: it prints "time 1", "time 2", ... as the parent
 * does.
 *
 * Unlike MITOSIS, each side knows which one it is, and says so on stderr:
 *   simple_parent: parent: prepared seed 73 (pinned, generation ..., 0.71 ms)
 *   simple_parent: child: resumed as pid 4242 from seed 73 at 10.0.0.1:7070
 *
 *   simple_parent -handler_id=73 [-pin=1] [-interval_ms=1000] [-ticks=0]
 *
 *   -handler_id  the seed id (MITOSIS's key; any 1-128 of [A-Za-z0-9._-])
 *   -pin=1       the seed outlives this process, until `mitosis drop --id 73`
 *                (MITOSIS's fork_prepare_ping); -pin=0: it goes when this
 *                process exits (MITOSIS's fork_prepare)
 *   -interval_ms time between two lines
 *   -ticks=N     exit (status 0) after printing "time N"; 0: never. Children
 *                inherit it, so they stop at the same count.
 * Flags are gflags-style: -name=value, --name=value or -name value; a bare
 * -pin means -pin=1 and -nopin -pin=0.
 *
 * Build: cc -o simple_parent simple_parent.c $(pkg-config --cflags --libs mitosis)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mitosis.h>

static const char *handler_id = "73";
static int pin = 1;
static long interval_ms = 1000;
static long ticks = 0;

static void usage(const char *why) {
    fprintf(stderr, "simple_parent: %s\nusage: simple_parent -handler_id=ID [-pin=1] [-interval_ms=1000] [-ticks=0]\n", why);
    exit(64);
}

static long number(const char *name, const char *value, long min) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || *value == '\0' || *end != '\0' || v < min) {
        fprintf(stderr, "simple_parent: -%s wants a number >= %ld, got \"%s\"\n", name, min, value);
        exit(64);
    }
    return v;
}

static void parse_flags(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-') usage("unexpected argument");
        arg += arg[1] == '-' ? 2 : 1;
        char name[64];
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len == 0 || len >= sizeof name) usage("bad flag");
        memcpy(name, arg, len);
        name[len] = '\0';
        const char *value = eq ? eq + 1 : NULL;
        if (!value && strcmp(name, "pin") == 0) value = "1";
        if (!value && strcmp(name, "nopin") == 0) { strcpy(name, "pin"); value = "0"; }
        if (!value) {
            if (i + 1 >= argc) usage("flag without a value");
            value = argv[++i];
        }
        if (strcmp(name, "handler_id") == 0) handler_id = value;
        else if (strcmp(name, "pin") == 0)
            pin = strcmp(value, "1") == 0 || strcmp(value, "true") == 0 ? 1
                : strcmp(value, "0") == 0 || strcmp(value, "false") == 0 ? 0
                : (usage("-pin wants 1/0/true/false"), 0);
        else if (strcmp(name, "interval_ms") == 0) interval_ms = number(name, value, 1);
        else if (strcmp(name, "ticks") == 0) ticks = number(name, value, 0);
        else usage("unknown flag");
    }
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}, rem;
    while (nanosleep(&t, &rem) != 0 && errno == EINTR) t = rem;
}

int main(int argc, char **argv) {
    parse_flags(argc, argv);

    mitosis_conn *conn;
    int r = mitosis_open(NULL, &conn);
    if (r < 0) {
        fprintf(stderr, "simple_parent: %s\n", mitosis_last_error());
        return mitosis_exit_code(r);
    }

    long cnt = 0;
    sleep_ms(interval_ms);
    printf("time %ld\n", cnt++);
    fflush(stdout); /* or every child would print the buffered lines again */

    mitosis_prepare_info info;
    r = mitosis_fork_prepare_ex(conn, handler_id, pin ? MITOSIS_PIN : 0, &info);
    /* Every child resumed from the seed continues here, with r == MITOSIS_CHILD. */
    if (r == MITOSIS_PARENT) {
        fprintf(stderr, "simple_parent: parent: prepared seed %s (%s, generation %llx, %.2f ms)\n", handler_id,
                pin ? "pinned" : "until this process exits", (unsigned long long)info.generation,
                info.prepare_us / 1000.0);
    } else if (r == MITOSIS_CHILD) {
        fprintf(stderr, "simple_parent: child: resumed as pid %d from seed %s at %s\n", (int)info.pid, handler_id,
                info.seed_host);
    } else {
        fprintf(stderr, "simple_parent: cannot prepare seed %s: %s (%s)\n", handler_id, mitosis_last_error(),
                mitosis_strerror(r));
        return mitosis_exit_code(r);
    }

    for (;;) {
        printf("time %ld\n", cnt);
        fflush(stdout);
        if (ticks > 0 && cnt >= ticks) break;
        cnt++;
        sleep_ms(interval_ms);
    }
    mitosis_close(conn);
    return 0;
}
