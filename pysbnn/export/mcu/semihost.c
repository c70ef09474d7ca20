/* Minimal Arm semihosting, see semihost.h. */
#include "semihost.h"

#include <string.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE0 = 0x04,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_GET_CMDLINE = 0x15,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20
};

#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUNTIME_ERROR_UNKNOWN 0x20023u

/* r0 = operation, r1 = argument (usually a pointer to a parameter block);
 * the result comes back in r0. The "memory" clobber makes the compiler
 * write the block before the trap and re-read buffers after it. */
static int32_t sh_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

int32_t sh_open(const char *path, uint32_t mode)
{
    uint32_t block[3];
    block[0] = (uint32_t)(uintptr_t)path;
    block[1] = mode;
    block[2] = (uint32_t)strlen(path);
    return sh_call(SYS_OPEN, block);
}

int32_t sh_close(int32_t handle)
{
    uint32_t block[1];
    block[0] = (uint32_t)handle;
    return sh_call(SYS_CLOSE, block);
}

int32_t sh_flen(int32_t handle)
{
    uint32_t block[1];
    block[0] = (uint32_t)handle;
    return sh_call(SYS_FLEN, block);
}

uint32_t sh_read(int32_t handle, void *buf, uint32_t len)
{
    uint32_t block[3];
    int32_t not_read;
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)buf;
    block[2] = len;
    not_read = sh_call(SYS_READ, block); /* returns bytes NOT read */
    if (not_read < 0 || (uint32_t)not_read > len) {
        return 0;
    }
    return len - (uint32_t)not_read;
}

int32_t sh_get_cmdline(char *buf, uint32_t len)
{
    uint32_t block[2];
    block[0] = (uint32_t)(uintptr_t)buf;
    block[1] = len;
    return sh_call(SYS_GET_CMDLINE, block);
}

void sh_write0(const char *s)
{
    (void)sh_call(SYS_WRITE0, s);
}

void sh_exit(int32_t status)
{
    /* static: still usable when a fault left sp pointing nowhere useful */
    static uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)status;
    (void)sh_call(SYS_EXIT_EXTENDED, block);
    /* Only reached if the host lacks SYS_EXIT_EXTENDED. */
    (void)sh_call(SYS_EXIT, (const void *)(uintptr_t)(status == 0
        ? ADP_STOPPED_APPLICATION_EXIT : ADP_STOPPED_RUNTIME_ERROR_UNKNOWN));
    for (;;) {
    }
}
