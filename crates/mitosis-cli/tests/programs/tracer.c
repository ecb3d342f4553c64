/* Attaches to process argv[1] with PTRACE_SEIZE (without stopping it),
 * prints "traced" and stays attached until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (ptrace(PTRACE_SEIZE, atoi(argv[1]), 0, 0) != 0) {
        perror("PTRACE_SEIZE");
        return 1;
    }
    printf("traced\n");
    fflush(stdout);
    for (;;) pause();
}
