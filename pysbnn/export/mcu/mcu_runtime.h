/* What startup.c offers to main_mcu.c besides booting: stack measurement.
 *
 * The stack region [__stack_limit, __stack_top) (see link.ld) is painted with
 * STACK_PAINT at reset. Any word that no longer holds the pattern has been
 * written, so the lowest such word is the stack high-water mark.
 */
#ifndef MCU_RUNTIME_H
#define MCU_RUNTIME_H

#include <stdint.h>

#define STACK_PAINT 0xDEADBEEFu

/* The caller's stack pointer (a leaf that does not touch the stack). */
uintptr_t stack_pointer(void);
/* Re-paints every word of the stack region below the caller's sp. */
void stack_paint_below_caller(void);
/* Lowest address in the stack region that was written since painting;
 * equals stack_limit() when the whole region was used (overflow). */
uintptr_t stack_lowest_written(void);
uintptr_t stack_limit(void);
uintptr_t stack_top(void);

/* Exit codes of a faulting image: 128 + exception number (IPSR), e.g.
 * 131 HardFault, 132 MemManage, 133 BusFault, 134 UsageFault. */
#define EXIT_FAULT_BASE 128

#endif
