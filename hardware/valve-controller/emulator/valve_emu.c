/*
 * valve-emu: run the valve controller firmware in simavr, in real time, with UART0 on a pty.
 *
 * usage: valve-emu build/valve.elf
 *
 * stdout (line buffered), one event per line:
 *   PTY <path>                      the pseudo-terminal wired to UART0 (use this path, not the
 *                                   /tmp/simavr-uart0 symlink, which parallel instances overwrite)
 *   READY t_us=<sim time>
 *   PIN <valve|opto> <0|1> t_us=<simulated microseconds since reset>
 *   INJ lick <0|1> t_us=<...>       an injected lick-sensor edge was applied
 *   STATE <done|crashed> t_us=<...> the firmware stopped (never expected)
 * (simavr's uart_pty part prints a few lines of its own; readers ignore unknown lines.)
 *
 * stdin commands:
 *   LICK <ms>       drive the lick pin high now and low again <ms> later (simulated time)
 *   LICKPIN <0|1>   drive the lick pin to a level
 *   QUIT            exit (end of input also exits, so the emulator never outlives its parent)
 *
 * Pacing: simavr runs as fast as it can; this loop never lets simulated time get ahead of wall-clock
 * time since start (it waits on stdin for the difference), so baud rates and millisecond timing are real.
 * If the host is too slow, simulated time falls behind and catches up by running unthrottled.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_cycle_timers.h"
#include "sim_elf.h"
#include "uart_pty.h"

#define F_CPU 16000000u
#define CYCLES_PER_US (F_CPU / 1000000u)

static avr_t *avr;
static uart_pty_t uart_pty;
static avr_irq_t *lick_irq;

static double sim_us(void)
{
    return (double)avr->cycle / CYCLES_PER_US;
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct pin_watch {
    const char *name;
    int level;
};
static struct pin_watch valve_pin = {"valve", 0}, opto_pin = {"opto", 0};

static void pin_changed(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    struct pin_watch *w = param;
    int level = value ? 1 : 0;
    if (level == w->level)
        return;
    w->level = level;
    printf("PIN %s %d t_us=%.4f\n", w->name, level, sim_us());
}

static void set_lick(int level)
{
    avr_raise_irq(lick_irq, level ? 1 : 0);
    printf("INJ lick %d t_us=%.4f\n", level ? 1 : 0, sim_us());
}

static avr_cycle_count_t lick_release(struct avr_t *a, avr_cycle_count_t when, void *param)
{
    (void)a;
    (void)when;
    (void)param;
    set_lick(0);
    return 0;
}

/* The sleep callback simavr calls while the firmware sleeps: pacing is done in the main loop. */
static void no_sleep(avr_t *a, avr_cycle_count_t how_long)
{
    (void)a;
    (void)how_long;
}

static char cmd_buf[256];
static size_t cmd_len;

static void run_command(char *cmd)
{
    long ms;
    int level;
    if (sscanf(cmd, "LICK %ld", &ms) == 1 && ms > 0 && ms < 60000) {
        set_lick(1);
        avr_cycle_timer_register_usec(avr, (uint32_t)(ms * 1000), lick_release, NULL);
    } else if (sscanf(cmd, "LICKPIN %d", &level) == 1) {
        set_lick(level);
    } else if (strncmp(cmd, "QUIT", 4) == 0) {
        printf("EXIT t_us=%.4f\n", sim_us());
        exit(0);
    } else if (cmd[0]) {
        printf("ERROR unknown command: %s\n", cmd);
    }
}

/* Returns 0 at end of input. */
static int read_stdin(void)
{
    char buf[256];
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n == 0)
        return 0;
    if (n < 0)
        return errno == EINTR || errno == EAGAIN;
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || cmd_len == sizeof cmd_buf - 1) {
            cmd_buf[cmd_len] = 0;
            run_command(cmd_buf);
            cmd_len = 0;
        } else if (buf[i] != '\r') {
            cmd_buf[cmd_len++] = buf[i];
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s firmware.elf\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(argv[1], &fw) != 0) {
        fprintf(stderr, "valve-emu: cannot read firmware %s\n", argv[1]);
        return 1;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) {
        fprintf(stderr, "valve-emu: simavr has no atmega328p core\n");
        return 1;
    }
    avr_init(avr);
    avr_load_firmware(avr, &fw);
    avr->frequency = F_CPU;
    avr->sleep = no_sleep;
    avr->log = LOG_ERROR;

    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 0), pin_changed, &valve_pin);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 1), pin_changed, &opto_pin);
    lick_irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);

    uart_pty_init(avr, &uart_pty);
    uart_pty_connect(&uart_pty, '0');
    /* simavr usleep()s whenever the firmware reads UCSR0A with nothing pending (meant for polling
     * loops); the RX interrupt reads it for every byte, and each such sleep costs ~0.1 ms of wall
     * time per byte. Pacing is ours, so turn that off. */
    uint32_t uart_flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &uart_flags);
    uart_flags &= ~(uint32_t)(AVR_UART_FLAG_POOL_SLEEP | AVR_UART_FLAG_STDIO);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &uart_flags);

    /* Hold the slave side open in raw mode: with the default cooked mode the pty would echo the
     * firmware's own output back into it before the host configures the port, and with no slave open
     * the master reports errors. */
    int slave = open(uart_pty.port[0].slavename, O_RDWR | O_NOCTTY);
    if (slave < 0) {
        fprintf(stderr, "valve-emu: cannot open %s: %s\n", uart_pty.port[0].slavename, strerror(errno));
        return 1;
    }
    struct termios tio;
    tcgetattr(slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);

    printf("PTY %s\n", uart_pty.port[0].slavename);
    printf("READY t_us=%.4f\n", sim_us());

    const uint64_t t0 = wall_us();
    int stdin_open = 1;
    for (;;) {
        avr_cycle_count_t target = (avr_cycle_count_t)(wall_us() - t0) * CYCLES_PER_US;
        while (avr->cycle < target) {
            int state = avr_run(avr);
            if (state == cpu_Done || state == cpu_Crashed) {
                printf("STATE %s t_us=%.4f\n", state == cpu_Done ? "done" : "crashed", sim_us());
                return 1;
            }
        }
        uint64_t now = wall_us() - t0;
        uint64_t ahead = avr->cycle / CYCLES_PER_US > now ? avr->cycle / CYCLES_PER_US - now : 0;
        struct timespec wait = {(time_t)(ahead / 1000000u), (long)(ahead % 1000000u) * 1000};
        struct pollfd pfd = {stdin_open ? STDIN_FILENO : -1, POLLIN, 0};
        int r = ppoll(&pfd, 1, &wait, NULL);
        if (r > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
            if (!read_stdin()) {
                printf("EXIT t_us=%.4f\n", sim_us());
                return 0;
            }
        }
    }
}
