/* A self-prepare through the raw local protocol (what mitosis::fork_prepare
 * does), with a pause between sending the request and reading the answer,
 * as if the caller were preempted there.
 *
 *   selfprep <socket> <id> <pause ms>
 *
 * Sends Prepare{pid: own pid, id, reply_slot: Some(buffer), pinned: true, copy: false}, sleeps, then
 * reads the connection: the original gets the daemon's answer and prints
 * "role parent"; a resumed child must find the child marker in the buffer
 * and print "role child". Then answers "alive" to each stdin line.
 */
#define _GNU_SOURCE
/* The test passes mitosis_proto::PROTOCOL_VERSION (-DPROTOCOL_VERSION=N). */
#ifndef PROTOCOL_VERSION
#error "compile with -DPROTOCOL_VERSION=<mitosis_proto::PROTOCOL_VERSION>"
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static unsigned char reply[4096];

static size_t varint(unsigned char *out, uint64_t v) {
    size_t n = 0;
    do {
        unsigned char b = v & 0x7f;
        v >>= 7;
        out[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }

    unsigned char body[512];
    size_t n = 0;
    n += varint(body + n, PROTOCOL_VERSION);        /* Envelope.version */
    n += varint(body + n, 0);                       /* LocalRequest::Prepare */
    int32_t pid = getpid();
    n += varint(body + n, ((uint32_t)pid << 1) ^ (uint32_t)(pid >> 31)); /* pid, zigzag */
    size_t idlen = strlen(argv[2]);
    n += varint(body + n, idlen);
    memcpy(body + n, argv[2], idlen);
    n += idlen;
    body[n++] = 1;                                  /* Some(ReplySlot) */
    n += varint(body + n, (uint64_t)(uintptr_t)reply);
    n += varint(body + n, sizeof reply);
    body[n++] = 1;                                  /* pinned */
    body[n++] = 0;                                  /* copy */
    unsigned char frame[516];
    uint32_t len = n;
    memcpy(frame, &len, 4);
    memcpy(frame + 4, body, n);

    printf("ready %d\n", getpid());
    fflush(stdout);
    if (write(s, frame, n + 4) != (ssize_t)(n + 4)) { perror("write"); return 1; }
    long ms = atol(argv[3]);
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000}, rem;
    while (nanosleep(&t, &rem) != 0 && errno == EINTR) t = rem;
    ssize_t r = read(s, reply, sizeof reply);
    if (r >= 8 && memcmp(reply, "MTSCHILD", 8) == 0)
        printf("role child\n");
    else if (r > 0)
        printf("role parent\n");
    else
        printf("read failed: %zd %s\n", r, strerror(errno));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        printf("alive\n");
        fflush(stdout);
    }
    return 0;
}
