/* Test driver for a model on Cortex-M (QEMU mps2-an386, semihosting).
 *
 * Reads MODEL_INPUTS-byte images from a host file (second word of the semihosting
 * command line, default "images.bin"), calls MODEL_PREDICT on each and
 * prints to the host console:
 *     N <number of images>
 *     <prediction>              one line per image
 *     STACK_PREDICT <bytes>     deepest stack use of one MODEL_PREDICT call
 *     STACK_TOTAL <bytes>       deepest stack use of the whole run
 *     STACK_SIZE <bytes>        size of the stack region (link.ld)
 *     TICKS_PREDICT <ticks>     25 MHz timer ticks spent in MODEL_PREDICT,
 *                               summed over all images (see below)
 *     DONE
 * Exit codes: 0 ok, 2 startup self-check failed, 3 cannot open the file,
 * 4 file size not a multiple of MODEL_INPUTS, 5 short read, 7 stack overflow,
 * 128+n exception n (see startup.c).
 */
#include <stdint.h>

#include "mcu_runtime.h"
#include "semihost.h"

/* CMSDK APB timer 0 of the MPS2 boards: a 32-bit down-counter clocked at
 * the 25 MHz system clock. Under `qemu -icount shift=0` every instruction
 * takes 1 ns of virtual time, so one tick is exactly 40 instructions; without
 * -icount the ticks follow the host's wall clock and mean little. */
#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)

#ifndef MODEL_PREDICT
#define MODEL_PREDICT model_predict
#endif
#ifndef MODEL_INPUTS
#define MODEL_INPUTS 784u
#endif
#define IMAGE_BYTES MODEL_INPUTS

int MODEL_PREDICT(const uint8_t *image);

static uint32_t image_words[(IMAGE_BYTES + 3u) / 4u]; /* 4-byte aligned */
static char cmdline[256];
/* Probes for Reset_Handler's .data copy and .bss clearing. */
static volatile uint32_t data_probe = 0x5AFEC0DEu;
static volatile uint32_t bss_probe[4];
/* Lowest stack address seen written so far (for STACK_TOTAL). Must be
 * sampled before each re-paint, which erases the earlier history. */
static uintptr_t stack_lowest = UINTPTR_MAX;

static void note_stack(void)
{
    uintptr_t low = stack_lowest_written();
    if (low < stack_lowest) {
        stack_lowest = low;
    }
}

/* Prints "<key> <value>\n" (just "<value>\n" for an empty key). */
static void print_line(const char *key, int64_t value)
{
    char buf[64];
    char digits[20];
    unsigned n = 0, i = 0;
    uint64_t mag = value < 0 ? 0u - (uint64_t)value : (uint64_t)value;
    while (*key != '\0' && i < 32u) {
        buf[i++] = *key++;
    }
    if (i > 0) {
        buf[i++] = ' ';
    }
    if (value < 0) {
        buf[i++] = '-';
    }
    do {
        digits[n++] = (char)('0' + (int)(mag % 10u));
        mag /= 10u;
    } while (mag != 0u);
    while (n > 0) {
        buf[i++] = digits[--n];
    }
    buf[i++] = '\n';
    buf[i] = '\0';
    sh_write0(buf);
}

/* Second whitespace-separated word of the command line, or the default. */
static const char *image_path(void)
{
    char *p = cmdline;
    if (sh_get_cmdline(cmdline, sizeof cmdline) != 0) {
        return "images.bin";
    }
    cmdline[sizeof cmdline - 1u] = '\0';
    while (*p != '\0' && *p != ' ') {
        p++; /* skip the program name */
    }
    while (*p == ' ') {
        p++;
    }
    if (*p == '\0') {
        return "images.bin";
    }
    {
        char *end = p;
        while (*end != '\0' && *end != ' ') {
            end++;
        }
        *end = '\0';
    }
    return p;
}

int main(void)
{
    const uint8_t *image = (const uint8_t *)image_words;
    int32_t fd, len;
    uint32_t n, i, deepest_predict = 0;
    uint64_t ticks = 0;
    const char *path;

    if (data_probe != 0x5AFEC0DEu || bss_probe[0] != 0u || bss_probe[3] != 0u) {
        sh_write0("ERROR startup: .data not copied or .bss not zeroed\n");
        return 2;
    }
    path = image_path();
    fd = sh_open(path, 1u /* "rb" */);
    if (fd < 0) {
        sh_write0("ERROR cannot open image file\n");
        return 3;
    }
    len = sh_flen(fd);
    if (len < 0 || (uint32_t)len % IMAGE_BYTES != 0u) {
        sh_write0("ERROR image file size is not a multiple of the image size\n");
        return 4;
    }
    n = (uint32_t)len / IMAGE_BYTES;
    print_line("N", n);
    TIMER0_RELOAD = 0xFFFFFFFFu;
    TIMER0_VALUE = 0xFFFFFFFFu;
    TIMER0_CTRL = 1u; /* enable, no interrupt */

    for (i = 0; i < n; i++) {
        uintptr_t sp;
        uint32_t t0, t1;
        int pred;
        if (sh_read(fd, image_words, IMAGE_BYTES) != IMAGE_BYTES) {
            sh_write0("ERROR short read\n");
            return 5;
        }
        /* Paint below our frame, predict, then find how deep it wrote. */
        note_stack();
        sp = stack_pointer();
        stack_paint_below_caller();
        t0 = TIMER0_VALUE;
        pred = MODEL_PREDICT(image);
        t1 = TIMER0_VALUE;
        ticks += (uint32_t)(t0 - t1); /* down-counter; wraps modulo 2^32 */
        {
            uint32_t used = (uint32_t)(sp - stack_lowest_written());
            if (used > deepest_predict) {
                deepest_predict = used;
            }
        }
        note_stack();
        print_line("", pred);
    }
    (void)sh_close(fd);

    print_line("STACK_PREDICT", deepest_predict);
    note_stack();
    print_line("STACK_TOTAL", (uint32_t)(stack_top() - stack_lowest));
    print_line("STACK_SIZE", (uint32_t)(stack_top() - stack_limit()));
    print_line("TICKS_PREDICT", (int64_t)ticks);
    if (stack_lowest == stack_limit()) {
        sh_write0("ERROR stack overflow (whole stack region used)\n");
        return 7;
    }
    sh_write0("DONE\n");
    return 0;
}
