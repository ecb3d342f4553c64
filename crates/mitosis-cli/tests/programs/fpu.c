/* Register state across a remote fork, checked by the program itself.
 *
 *   fpu avx     ymm0-15 and MXCSR loaded with known values, then a raw
 *               read(0, buf, 1) in the same asm block (the process is
 *               prepared while blocked in it), then ymm0-15 stored and
 *               compared: prints "fpu ok" or "fpu FAILED ...".
 *   fpu avx512  the same with zmm0-31 and the mask registers k1-k7.
 *   fpu x87     the x87 register stack st0-st7 (80-bit values) and control
 *               word, around the same raw read.
 *   fpu compute an SSE double / x87 long double computation with a
 *               non-default rounding mode, half before the prepare and
 *               half (as many steps as the input line says) after it:
 *               prints "compute <x> <y>" in hex-float.
 *
 * Every mode first prints "ready <pid>" and then blocks on stdin.
 */
#define _GNU_SOURCE
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned char vin[32][64] __attribute__((aligned(64)));
static unsigned char vout[32][64] __attribute__((aligned(64)));
static char buf[16];

static void ready(void) {
    printf("ready %d\n", getpid());
    fflush(stdout);
}

static void fill(void) {
    for (int r = 0; r < 32; r++)
        for (int b = 0; b < 64; b++)
            vin[r][b] = (unsigned char)(r * 64 + b) * 37u + 11u;
    memset(vout, 0, sizeof vout);
}

static int compare(int regs, int bytes, const char *name) {
    for (int r = 0; r < regs; r++) {
        if (memcmp(vin[r], vout[r], bytes) != 0) {
            int b = 0;
            while (vin[r][b] == vout[r][b]) b++;
            printf("fpu FAILED %s%d byte %d is %#x, expected %#x\n", name, r, b, vout[r][b], vin[r][b]);
            return 1;
        }
    }
    return 0;
}

static int check_read(long ret) {
    if (ret != 1) {
        printf("fpu FAILED read returned %ld\n", ret);
        return 1;
    }
    return 0;
}

static int avx(void) {
    fill();
    unsigned int csr_in = 0x1f80 | 0x6000 /* round toward zero */ | 0x8000 /* FTZ */ | 0x40 /* DAZ */;
    unsigned int csr_out = 0;
    long ret;
    ready();
    __asm__ volatile(
        "vldmxcsr %[csr_in]\n\t"
        "vmovdqa 0*64(%[in]), %%ymm0\n\t"
        "vmovdqa 1*64(%[in]), %%ymm1\n\t"
        "vmovdqa 2*64(%[in]), %%ymm2\n\t"
        "vmovdqa 3*64(%[in]), %%ymm3\n\t"
        "vmovdqa 4*64(%[in]), %%ymm4\n\t"
        "vmovdqa 5*64(%[in]), %%ymm5\n\t"
        "vmovdqa 6*64(%[in]), %%ymm6\n\t"
        "vmovdqa 7*64(%[in]), %%ymm7\n\t"
        "vmovdqa 8*64(%[in]), %%ymm8\n\t"
        "vmovdqa 9*64(%[in]), %%ymm9\n\t"
        "vmovdqa 10*64(%[in]), %%ymm10\n\t"
        "vmovdqa 11*64(%[in]), %%ymm11\n\t"
        "vmovdqa 12*64(%[in]), %%ymm12\n\t"
        "vmovdqa 13*64(%[in]), %%ymm13\n\t"
        "vmovdqa 14*64(%[in]), %%ymm14\n\t"
        "vmovdqa 15*64(%[in]), %%ymm15\n\t"
        "xor %%eax, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "mov %[buf], %%rsi\n\t"
        "mov $1, %%edx\n\t"
        "syscall\n\t"
        "mov %%rax, %[ret]\n\t"
        "vmovdqa %%ymm0, 0*64(%[out])\n\t"
        "vmovdqa %%ymm1, 1*64(%[out])\n\t"
        "vmovdqa %%ymm2, 2*64(%[out])\n\t"
        "vmovdqa %%ymm3, 3*64(%[out])\n\t"
        "vmovdqa %%ymm4, 4*64(%[out])\n\t"
        "vmovdqa %%ymm5, 5*64(%[out])\n\t"
        "vmovdqa %%ymm6, 6*64(%[out])\n\t"
        "vmovdqa %%ymm7, 7*64(%[out])\n\t"
        "vmovdqa %%ymm8, 8*64(%[out])\n\t"
        "vmovdqa %%ymm9, 9*64(%[out])\n\t"
        "vmovdqa %%ymm10, 10*64(%[out])\n\t"
        "vmovdqa %%ymm11, 11*64(%[out])\n\t"
        "vmovdqa %%ymm12, 12*64(%[out])\n\t"
        "vmovdqa %%ymm13, 13*64(%[out])\n\t"
        "vmovdqa %%ymm14, 14*64(%[out])\n\t"
        "vmovdqa %%ymm15, 15*64(%[out])\n\t"
        "vstmxcsr %[csr_out]\n\t"
        "vzeroupper\n\t"
        : [ret] "=m"(ret), [csr_out] "=m"(csr_out)
        : [in] "r"(vin), [out] "r"(vout), [buf] "r"(buf), [csr_in] "m"(csr_in)
        : "rax", "rdi", "rsi", "rdx", "rcx", "r11", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
          "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    unsigned int dflt = 0x1f80;
    __asm__ volatile("vldmxcsr %0" ::"m"(dflt));
    if (check_read(ret)) return 1;
    if (compare(16, 32, "ymm")) return 1;
    if (csr_out != csr_in) {
        printf("fpu FAILED mxcsr is %#x, expected %#x\n", csr_out, csr_in);
        return 1;
    }
    printf("fpu ok\n");
    return 0;
}

__attribute__((target("avx512f,avx512bw"))) static int avx512(void) {
    fill();
    uint64_t kin[8], kout[8];
    for (int i = 0; i < 8; i++) kin[i] = 0x0123456789abcdefull * (i + 3) ^ (0x1111111111111111ull << (i % 4));
    memset(kout, 0, sizeof kout);
    long ret;
    ready();
    __asm__ volatile(
        "kmovq 1*8(%[kin]), %%k1\n\t"
        "kmovq 2*8(%[kin]), %%k2\n\t"
        "kmovq 3*8(%[kin]), %%k3\n\t"
        "kmovq 4*8(%[kin]), %%k4\n\t"
        "kmovq 5*8(%[kin]), %%k5\n\t"
        "kmovq 6*8(%[kin]), %%k6\n\t"
        "kmovq 7*8(%[kin]), %%k7\n\t"
#define L(n) "vmovdqa64 " #n "*64(%[in]), %%zmm" #n "\n\t"
        L(0) L(1) L(2) L(3) L(4) L(5) L(6) L(7) L(8) L(9) L(10) L(11) L(12) L(13) L(14) L(15)
        L(16) L(17) L(18) L(19) L(20) L(21) L(22) L(23) L(24) L(25) L(26) L(27) L(28) L(29) L(30) L(31)
        "xor %%eax, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "mov %[buf], %%rsi\n\t"
        "mov $1, %%edx\n\t"
        "syscall\n\t"
        "mov %%rax, %[ret]\n\t"
#define S(n) "vmovdqa64 %%zmm" #n ", " #n "*64(%[out])\n\t"
        S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11) S(12) S(13) S(14) S(15)
        S(16) S(17) S(18) S(19) S(20) S(21) S(22) S(23) S(24) S(25) S(26) S(27) S(28) S(29) S(30) S(31)
        "kmovq %%k1, 1*8(%[kout])\n\t"
        "kmovq %%k2, 2*8(%[kout])\n\t"
        "kmovq %%k3, 3*8(%[kout])\n\t"
        "kmovq %%k4, 4*8(%[kout])\n\t"
        "kmovq %%k5, 5*8(%[kout])\n\t"
        "kmovq %%k6, 6*8(%[kout])\n\t"
        "kmovq %%k7, 7*8(%[kout])\n\t"
        "vzeroupper\n\t"
        : [ret] "=m"(ret)
        : [in] "r"(vin), [out] "r"(vout), [buf] "r"(buf), [kin] "r"(kin), [kout] "r"(kout)
        : "rax", "rdi", "rsi", "rdx", "rcx", "r11", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
          "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",
          "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27",
          "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", "k7");
    if (check_read(ret)) return 1;
    if (compare(32, 64, "zmm")) return 1;
    for (int i = 1; i < 8; i++) {
        if (kin[i] != kout[i]) {
            printf("fpu FAILED k%d is %#llx, expected %#llx\n", i, (unsigned long long)kout[i], (unsigned long long)kin[i]);
            return 1;
        }
    }
    printf("fpu ok\n");
    return 0;
}

static int x87(void) {
    /* Eight distinct 80-bit values, some not representable as double. */
    long double in[8], out[8];
    for (int i = 0; i < 8; i++) in[i] = (1.0L + i) / 3.0L + 0x1p-60L * (i + 1);
    memset(out, 0, sizeof out);
    unsigned short cw_in = 0x037f | 0x0400; /* 64-bit precision, round down */
    unsigned short cw_out = 0;
    long ret;
    ready();
    __asm__ volatile(
        "fninit\n\t"
        "fldcw %[cw_in]\n\t"
        "fldt 0*16(%[in])\n\t"
        "fldt 1*16(%[in])\n\t"
        "fldt 2*16(%[in])\n\t"
        "fldt 3*16(%[in])\n\t"
        "fldt 4*16(%[in])\n\t"
        "fldt 5*16(%[in])\n\t"
        "fldt 6*16(%[in])\n\t"
        "fldt 7*16(%[in])\n\t"
        "xor %%eax, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "mov %[buf], %%rsi\n\t"
        "mov $1, %%edx\n\t"
        "syscall\n\t"
        "mov %%rax, %[ret]\n\t"
        "fnstcw %[cw_out]\n\t"
        "fstpt 7*16(%[out])\n\t"
        "fstpt 6*16(%[out])\n\t"
        "fstpt 5*16(%[out])\n\t"
        "fstpt 4*16(%[out])\n\t"
        "fstpt 3*16(%[out])\n\t"
        "fstpt 2*16(%[out])\n\t"
        "fstpt 1*16(%[out])\n\t"
        "fstpt 0*16(%[out])\n\t"
        "fninit\n\t"
        : [ret] "=m"(ret), [cw_out] "=m"(cw_out)
        : [in] "r"(in), [out] "r"(out), [buf] "r"(buf), [cw_in] "m"(cw_in)
        : "rax", "rdi", "rsi", "rdx", "rcx", "r11", "memory", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)",
          "st(6)", "st(7)");
    if (check_read(ret)) return 1;
    for (int i = 0; i < 8; i++) {
        if (memcmp(&in[i], &out[i], 10) != 0) {
            printf("fpu FAILED st value %d is %La, expected %La\n", i, out[i], in[i]);
            return 1;
        }
    }
    if (cw_out != cw_in) {
        printf("fpu FAILED x87 control word is %#x, expected %#x\n", cw_out, cw_in);
        return 1;
    }
    printf("fpu ok\n");
    return 0;
}

static volatile double x_state;
static volatile long double y_state;

static void steps(long n) {
    double x = x_state;
    long double y = y_state;
    for (long i = 0; i < n; i++) {
        x = 3.9 * x * (1.0 - x);
        y = y * 1.0000001L + (long double)x / 3.0L;
    }
    x_state = x;
    y_state = y;
}

static int compute(void) {
    /* A rounding mode that changes the results if MXCSR or the x87 control
     * word is lost. */
    if (fesetround(FE_UPWARD) != 0) {
        printf("fesetround failed\n");
        return 1;
    }
    x_state = 0.123456789;
    y_state = 1.0L;
    steps(200000);
    ready();
    if (!fgets(buf, sizeof buf, stdin)) return 1;
    steps(atol(buf));
    printf("compute %a %La\n", x_state, y_state);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdin, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "avx";
    if (!strcmp(mode, "avx")) return avx();
    if (!strcmp(mode, "avx512")) return avx512();
    if (!strcmp(mode, "x87")) return x87();
    if (!strcmp(mode, "compute")) return compute();
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
