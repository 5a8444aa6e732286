/*
 * A polled 16550 UART driver, written as it would be for a microcontroller: the registers are
 * `volatile uint8_t` at byte offsets from a base address, nothing is buffered, no interrupts,
 * no C library. `examples/uart.rs` compiles it into a shared object at run time and calls
 * `uart_main` with the base of an `of` trapped region whose device is a 16550 model, so every
 * register access below faults and is served by that model.
 *
 * What it does:
 *   1. initialises the UART: 115200 baud from the standard 1.8432 MHz clock (divisor 1),
 *      8 data bits, no parity, 1 stop bit (8N1), FIFOs enabled and cleared, no interrupts,
 *      DTR and RTS raised; it reads back the divisor latch, LCR, IIR, IER and the scratch
 *      register and returns a negative error code (below) if the device disagrees;
 *   2. prints the greeting UART_GREETING;
 *   3. echoes every received byte until it receives EOT (0x04, which is not echoed). A line
 *      feed is echoed as CR LF, as a terminal driver's output post-processing (ONLCR) does;
 *      every other byte, CR included, is echoed unchanged;
 *   4. waits until the transmitter is empty and returns the number of bytes it received and
 *      echoed (EOT not counted; a line feed counts once).
 *
 * Builds warning-free with `cc -Wall -Wextra -O0..-O3 -shared -fPIC -ffreestanding -nostdlib`.
 */

#include <stdint.h>

/* Register offsets (DLAB = LCR bit 7 selects the divisor latch at offsets 0 and 1). */
#define UART_RBR 0 /* receive buffer (read, DLAB 0) */
#define UART_THR 0 /* transmit holding (write, DLAB 0) */
#define UART_DLL 0 /* divisor latch, low byte (DLAB 1) */
#define UART_IER 1 /* interrupt enable (DLAB 0) */
#define UART_DLM 1 /* divisor latch, high byte (DLAB 1) */
#define UART_IIR 2 /* interrupt identification (read) */
#define UART_FCR 2 /* FIFO control (write) */
#define UART_LCR 3 /* line control */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */
#define UART_MSR 6 /* modem status */
#define UART_SCR 7 /* scratch */

#define LCR_WLEN8 0x03 /* 8 data bits; no parity and 1 stop bit are the zero bits */
#define LCR_DLAB 0x80
#define LSR_DR 0x01   /* a received byte is waiting */
#define LSR_THRE 0x20 /* the transmit holding register is empty */
#define LSR_TEMT 0x40 /* the transmitter is idle */
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define IIR_FIFOS 0xc0 /* both bits set: FIFOs enabled */
#define MCR_DTR 0x01
#define MCR_RTS 0x02

#define UART_CLOCK 1843200u
#define UART_BAUD 115200u
#define UART_DIVISOR (UART_CLOCK / (16u * UART_BAUD))

#define EOT 0x04

#define UART_GREETING "of: 16550 UART on a trapped region\r\n"

/* Error codes of uart_main (negative, so they never look like a byte count). */
#define UART_ERR_DIVISOR (-1) /* the divisor latch did not read back */
#define UART_ERR_LCR (-2)     /* LCR did not read back */
#define UART_ERR_FIFO (-3)    /* IIR does not report the FIFOs enabled */
#define UART_ERR_IER (-4)     /* IER is not 0 (a DLM write landed in IER?) */
#define UART_ERR_SCRATCH (-5) /* the scratch register did not hold a value */

int uart_main(volatile uint8_t *base);

static int uart_init(volatile uint8_t *u)
{
	/* Divisor first: it is reachable only while DLAB is set, and the line runs at the rate
	 * it sets from the moment DLAB is cleared. */
	u[UART_LCR] = LCR_DLAB;
	u[UART_DLL] = (uint8_t)(UART_DIVISOR & 0xff);
	u[UART_DLM] = (uint8_t)(UART_DIVISOR >> 8);
	if (u[UART_DLL] != (uint8_t)(UART_DIVISOR & 0xff) ||
	    u[UART_DLM] != (uint8_t)(UART_DIVISOR >> 8))
		return UART_ERR_DIVISOR;
	/* 8N1, DLAB cleared: offsets 0 and 1 are the data and IER registers again. */
	u[UART_LCR] = LCR_WLEN8;
	if (u[UART_LCR] != LCR_WLEN8)
		return UART_ERR_LCR;
	/* Enable the FIFOs and throw away whatever they held before we owned the UART. */
	u[UART_FCR] = FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX;
	if ((u[UART_IIR] & IIR_FIFOS) != IIR_FIFOS)
		return UART_ERR_FIFO;
	/* This driver polls: no interrupts. */
	u[UART_IER] = 0;
	if (u[UART_IER] != 0)
		return UART_ERR_IER;
	/* The scratch register holds whatever is written to it: two complementary patterns. */
	u[UART_SCR] = 0x5a;
	if (u[UART_SCR] != 0x5a)
		return UART_ERR_SCRATCH;
	u[UART_SCR] = 0xa5;
	if (u[UART_SCR] != 0xa5)
		return UART_ERR_SCRATCH;
	/* Last, tell the other end we are ready: with RTS raised it starts sending. */
	u[UART_MCR] = MCR_DTR | MCR_RTS;
	return 0;
}

static void uart_putc(volatile uint8_t *u, uint8_t c)
{
	while (!(u[UART_LSR] & LSR_THRE))
		;
	u[UART_THR] = c;
}

static void uart_puts(volatile uint8_t *u, const char *s)
{
	while (*s)
		uart_putc(u, (uint8_t)*s++);
}

static uint8_t uart_getc(volatile uint8_t *u)
{
	while (!(u[UART_LSR] & LSR_DR))
		;
	return u[UART_RBR];
}

int uart_main(volatile uint8_t *base)
{
	int err = uart_init(base);
	if (err)
		return err;
	uart_puts(base, UART_GREETING);
	int echoed = 0;
	for (;;) {
		uint8_t c = uart_getc(base);
		if (c == EOT)
			break;
		if (c == '\n')
			uart_putc(base, '\r');
		uart_putc(base, c);
		echoed++;
	}
	/* Return only once the last byte has left the transmitter. */
	while (!(base[UART_LSR] & LSR_TEMT))
		;
	return echoed;
}
