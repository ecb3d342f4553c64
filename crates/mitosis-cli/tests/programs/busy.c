/* Prepared in the middle of a computation (not in a system call): prints
 * "ready <pid>", computes for a while with its state in registers, prints
 * "busy <result>", then waits for end of input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 600000000;
    printf("ready %d\n", getpid());
    fflush(stdout);
    uint64_t x = 88172645463325252ull, acc = 0;
    double f = 1.0;
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc += x >> 60;
        f = f * 0.999999999 + (double)(x & 0xff) * 1e-9;
    }
    printf("busy %llx %llx %a\n", (unsigned long long)x, (unsigned long long)acc, f);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
