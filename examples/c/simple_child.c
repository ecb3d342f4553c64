/* simple_child: MITOSIS's simple_child, on the mitosis C API.
 *
 * Becomes a child of seed <handler_id> prepared on another host by
 * simple_parent (see simple_parent.c): this process is replaced by it, and so
 * continues the parent's counter from where the parent prepared ("time 1",
 * "time 2", ...), on this process's stdout, keeping its pid.
 *
 *   simple_child -host=ADDR -handler_id=73
 *
 *   -host        the seed host's daemon: IP, IP:PORT or NAME[:PORT]
 *                (port 7070 if none; MITOSIS's -mac_id)
 *   -handler_id  the seed id given to simple_parent
 * Flags are gflags-style: -name=value, --name=value or -name value. The local
 * daemon is $MITOSIS_SOCKET, or /run/mitosis/mitosis.sock.
 *
 * Exit status if the resume fails: mitosis_exit_code() of the error, the
 * same as `mitosis resume` (66 unknown seed, 69 seed host unreachable or no
 * local daemon, ...). Once resumed, the status is the parent program's.
 *
 * Build: cc -o simple_child simple_child.c $(pkg-config --cflags --libs mitosis)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mitosis.h>

static const char *host = NULL;
static const char *handler_id = "73";

static void usage(const char *why) {
    fprintf(stderr, "simple_child: %s\nusage: simple_child -host=ADDR -handler_id=ID\n", why);
    exit(64);
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
        if (!value) {
            if (i + 1 >= argc) usage("flag without a value");
            value = argv[++i];
        }
        if (strcmp(name, "host") == 0) host = value;
        else if (strcmp(name, "handler_id") == 0) handler_id = value;
        else usage("unknown flag");
    }
    if (!host) usage("-host is required");
}

int main(int argc, char **argv) {
    parse_flags(argc, argv);

    mitosis_conn *conn;
    int r = mitosis_open(NULL, &conn);
    if (r < 0) {
        fprintf(stderr, "simple_child: %s\n", mitosis_last_error());
        return mitosis_exit_code(r);
    }
    fprintf(stderr, "simple_child: pid %d resuming seed %s from %s\n", (int)getpid(), handler_id, host);
    /* The child program resumes the parent program with `handler_id` from
     * `host`; on success this call does not return. */
    r = mitosis_fork_resume_remote(conn, host, handler_id);
    fprintf(stderr, "simple_child: cannot resume seed %s from %s: %s (%s)\n", handler_id, host, mitosis_last_error(),
            mitosis_strerror(r));
    mitosis_close(conn);
    return mitosis_exit_code(r);
}
