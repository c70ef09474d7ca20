/* Cortex-M4 startup for QEMU mps2-an386: vector table, Reset_Handler, faults.
 *
 * Reset_Handler: copy .data from flash, zero .bss, enable the FPU when the
 * code is built for it, make faults precise, paint the stack, run main() and
 * hand its return value to the host through semihosting. Every exception
 * other than reset ends the run with exit code 128 + exception number.
 */
#include <stdint.h>
#include <string.h>

#include "mcu_runtime.h"
#include "semihost.h"

int main(void);

/* Symbols from link.ld (only their addresses matter). */
extern uint32_t __stack_limit, __stack_top;
extern uint32_t __data_start, __data_end, __data_load;
extern uint32_t __bss_start, __bss_end;

void Reset_Handler(void) __attribute__((noreturn));
void Fault_Handler(void) __attribute__((noreturn));

typedef void (*handler_t)(void);

/* Cortex-M vector table: initial SP, then exception handlers. A struct keeps
 * it free of object<->function pointer casts (ISO C, -pedantic clean). */
struct vector_table {
    uint32_t *initial_sp;
    handler_t reset;
    handler_t exceptions[14]; /* NMI .. SysTick (numbers 2..15) */
    handler_t irq[32];        /* AN385/AN386 external interrupts */
};

#define F Fault_Handler
__attribute__((section(".isr_vector"), used))
const struct vector_table vector_table = {
    &__stack_top,
    Reset_Handler,
    {F, F, F, F, F, 0, 0, 0, 0, F, F, 0, F, F},
    {F, F, F, F, F, F, F, F, F, F, F, F, F, F, F, F,
     F, F, F, F, F, F, F, F, F, F, F, F, F, F, F, F}
};
#undef F

/* System control block registers (ARMv7-M ARM, B3.2). */
#define SCB_CCR (*(volatile uint32_t *)0xE000ED14u)
#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void)
{
    size_t data_bytes = (size_t)((char *)&__data_end - (char *)&__data_start);
    size_t bss_bytes = (size_t)((char *)&__bss_end - (char *)&__bss_start);
    memcpy(&__data_start, &__data_load, data_bytes);
    memset(&__bss_start, 0, bss_bytes);

#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* full access to CP10/CP11 (the FPU) */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    /* Report MemManage/BusFault/UsageFault as themselves rather than as a
     * HardFault, and trap integer division by zero (returns 0 otherwise). */
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);
    SCB_CCR |= 1u << 4;

    stack_paint_below_caller();
    sh_exit(main());
}

void Fault_Handler(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    sh_exit((int32_t)(EXIT_FAULT_BASE + (ipsr & 0x7Fu)));
}

/* ---- stack measurement ------------------------------------------------- */

__attribute__((noinline)) uintptr_t stack_pointer(void)
{
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* Must stay a leaf that pushes nothing: then its sp is the caller's sp and
 * the words it paints are exactly those below the caller's frame. */
__attribute__((noinline)) void stack_paint_below_caller(void)
{
    volatile uint32_t *p = &__stack_limit;
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    while ((uintptr_t)p < sp) {
        *p++ = STACK_PAINT;
    }
}

uintptr_t stack_lowest_written(void)
{
    const volatile uint32_t *p = &__stack_limit;
    while (p < &__stack_top && *p == STACK_PAINT) {
        p++;
    }
    return (uintptr_t)p;
}

uintptr_t stack_limit(void) { return (uintptr_t)&__stack_limit; }
uintptr_t stack_top(void) { return (uintptr_t)&__stack_top; }
