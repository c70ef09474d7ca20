/* Minimal Arm semihosting (AArch32, M-profile: "bkpt 0xab").
 *
 * Only what the test harness needs: open/read/close a host file, get the
 * command line, write text to the host console, exit with a status code.
 * Reference: Arm "Semihosting for AArch32 and AArch64", v2.0.
 * Harness-only code: an exported model never includes this file.
 */
#ifndef SEMIHOST_H
#define SEMIHOST_H

#include <stdint.h>

/* Host file handle, or -1 on error. mode: 0 "r", 1 "rb", 4 "w", 5 "wb". */
int32_t sh_open(const char *path, uint32_t mode);
int32_t sh_close(int32_t handle);
/* Length of an open host file in bytes, or -1. */
int32_t sh_flen(int32_t handle);
/* Reads up to len bytes; returns the number of bytes actually read. */
uint32_t sh_read(int32_t handle, void *buf, uint32_t len);
/* Command line given to QEMU by -semihosting-config ...,arg=A,arg=B
 * ("A B"), NUL terminated. Returns 0 on success. */
int32_t sh_get_cmdline(char *buf, uint32_t len);
/* NUL-terminated string to the host debug console. */
void sh_write0(const char *s);
/* Ends the simulation; QEMU exits with `status` (SYS_EXIT_EXTENDED, falling
 * back to SYS_EXIT, where only 0 / non-zero can be told apart). */
void sh_exit(int32_t status) __attribute__((noreturn));

#endif
