/*
 * bcirig reward valve controller firmware (ATmega328P @ 16 MHz).
 *
 * Line protocol at 115200 baud, documented in ../PROTOCOL.md. Pins:
 *   PB0 (Arduino D8)  valve driver, active high
 *   PB1 (Arduino D9)  opto TTL, active high
 *   PD2 (Arduino D2)  lick sensor, active high (external pull-down)
 *
 * Timing model: a 1 kHz Timer0 tick owns every output edge. A command only *requests* a pulse; the
 * tick opens it and counts it down, so a pulse of N ms is exactly N ticks long (crystal accurate) and
 * starts at most 1 ms after the command line arrived. Safety (max open time, watchdog) is checked in
 * the same tick, so it holds even if the main loop is stuck; the AVR watchdog resets a hung main loop,
 * and the valve is closed at reset before anything else runs.
 *
 * The main loop sleeps (SLEEP_MODE_IDLE) whenever it has nothing to do: every interrupt (tick, UART)
 * wakes it.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <stdint.h>
#include <string.h>
#include <util/atomic.h>

#define FW_NAME "bcirig-valve"
#define FW_VERSION "1.0.0"
#define PROTO_VERSION "1"

#define VALVE_BIT PB0
#define OPTO_BIT PB1
#define LICK_BIT PD2

#define LINE_MAX 48           /* longest command line, without the newline */
#define REPLY_MAX 80          /* longest reply line, with the newline */
#define CACHE_SIZE 4          /* replies remembered for repeated sequence numbers */
#define PARTIAL_TIMEOUT_MS 500 /* a line left unfinished this long is dropped with ERR PARTIAL */
#define LICK_DEBOUNCE_MS 3    /* a lick level must hold this many ticks to count */
#define OPTO_MAX_MS 10000u

/* Limits, reset to these defaults at every reset (the host sets its own at connect). */
static uint16_t max_open_ms = 500;
static uint16_t min_interval_ms = 200;
static volatile uint16_t watchdog_ms = 2000;

/* ----------------------------------------------------------------------------- state shared with ISRs */
static volatile uint32_t now_ms;        /* ticks since reset */
static volatile uint16_t valve_request; /* ms to open at the next tick, 0 = none */
static volatile uint16_t valve_left;    /* ms the valve stays open, 0 = closed */
static volatile uint32_t valve_open_at; /* tick the last pulse opened */
static volatile uint16_t opto_request;
static volatile uint16_t opto_left;
static volatile uint32_t opto_open_at;
static volatile uint32_t last_host_ms;  /* tick of the last well-formed command */
static volatile uint8_t wdog_tripped;   /* host silent: outputs were forced off */
static volatile uint8_t wdog_report;    /* a trip not yet reported to the host */
static volatile uint16_t wdog_trips;

#define LICK_QUEUE 8
static volatile uint32_t lick_queue[LICK_QUEUE];
static volatile uint8_t lick_head, lick_tail, licks_dropped;
static uint8_t lick_level, lick_same, lick_candidate;
static uint32_t lick_candidate_at;
static uint16_t lick_count;

#define RX_SIZE 64
#define TX_SIZE 128
static volatile uint8_t rx_buf[RX_SIZE];
static volatile uint8_t rx_head, rx_tail, rx_overrun;
static volatile uint8_t tx_buf[TX_SIZE];
static volatile uint8_t tx_head, tx_tail;

static uint16_t reward_count, error_count;
static uint8_t rewarded_once;
static uint32_t last_reward_ms;

static inline void outputs_off(void)
{
    PORTB &= (uint8_t) ~(_BV(VALVE_BIT) | _BV(OPTO_BIT));
    valve_request = valve_left = 0;
    opto_request = opto_left = 0;
}

/* ---------------------------------------------------------------------------------------- 1 kHz tick */
ISR(TIMER0_COMPA_vect)
{
    uint32_t t = now_ms + 1;
    now_ms = t;

    if (valve_left && --valve_left == 0)
        PORTB &= (uint8_t) ~_BV(VALVE_BIT);
    if (valve_request) {
        PORTB |= _BV(VALVE_BIT);
        valve_left = valve_request;
        valve_request = 0;
        valve_open_at = t;
    }
    if (opto_left && --opto_left == 0)
        PORTB &= (uint8_t) ~_BV(OPTO_BIT);
    if (opto_request) {
        PORTB |= _BV(OPTO_BIT);
        opto_left = opto_request;
        opto_request = 0;
        opto_open_at = t;
    }
    /* valve_left can never exceed max_open_ms (clamped before the request), so the max-open limit
     * needs no check here; the watchdog does. */
    if (!wdog_tripped && (uint32_t)(t - last_host_ms) >= watchdog_ms) {
        outputs_off();
        wdog_tripped = 1;
        wdog_report = 1;
        wdog_trips++;
    }

    /* Lick debounce: a new level must be seen LICK_DEBOUNCE_MS ticks in a row; the onset is stamped
     * with the first tick that saw it. */
    uint8_t level = (PIND & _BV(LICK_BIT)) ? 1 : 0;
    if (level == lick_level) {
        lick_same = 0;
    } else {
        if (lick_same == 0 || level != lick_candidate) {
            lick_candidate = level;
            lick_candidate_at = t;
            lick_same = 0;
        }
        if (++lick_same >= LICK_DEBOUNCE_MS) {
            lick_level = level;
            lick_same = 0;
            if (level) {
                uint8_t next = (uint8_t)((lick_head + 1) % LICK_QUEUE);
                if (next == lick_tail) {
                    licks_dropped++;
                } else {
                    lick_queue[lick_head] = lick_candidate_at;
                    lick_head = next;
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------- UART */
ISR(USART_RX_vect)
{
    uint8_t status = UCSR0A;
    uint8_t c = UDR0;
    if (status & (_BV(FE0) | _BV(DOR0)))
        c = 0; /* a framing error or overrun becomes a non-printable byte: the line gets ERR NOISE */
    uint8_t next = (uint8_t)((rx_head + 1) % RX_SIZE);
    if (next == rx_tail) {
        rx_overrun = 1;
        return;
    }
    rx_buf[rx_head] = c;
    rx_head = next;
}

ISR(USART_UDRE_vect)
{
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t) ~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint8_t)((tx_tail + 1) % TX_SIZE);
}

/* Sleep until the next interrupt. Interrupts are re-enabled by the instruction before SLEEP, so a wake
 * condition raised between the caller's check and the sleep cannot be missed. */
static void idle_until_interrupt(void)
{
    cli();
    sleep_enable();
    sei();
    sleep_cpu();
    sleep_disable();
}

static void tx_byte(uint8_t c)
{
    uint8_t next = (uint8_t)((tx_head + 1) % TX_SIZE);
    while (next == tx_tail) {
        wdt_reset();
        idle_until_interrupt(); /* UDRE interrupt frees room */
    }
    tx_buf[tx_head] = c;
    tx_head = next;
    UCSR0B |= _BV(UDRIE0);
}

static void tx_str(const char *s)
{
    while (*s)
        tx_byte((uint8_t)*s++);
}

static int rx_byte(void)
{
    int c = -1;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        if (rx_head != rx_tail) {
            c = rx_buf[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1) % RX_SIZE);
        }
    }
    return c;
}

/* 16-bit values shared with the tick are read with interrupts off: the AVR reads them a byte at a time. */
static uint16_t read16(volatile uint16_t *p)
{
    uint16_t v;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { v = *p; }
    return v;
}

static uint32_t millis(void)
{
    uint32_t t;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { t = now_ms; }
    return t;
}

/* ------------------------------------------------------------------------------------ reply building */
static char reply[REPLY_MAX];
static uint8_t reply_len;

static void put_str(const char *s)
{
    while (*s && reply_len < REPLY_MAX - 2)
        reply[reply_len++] = *s++;
    reply[reply_len] = 0;
}

static void put_u32(uint32_t v)
{
    char digits[11];
    uint8_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && reply_len < REPLY_MAX - 2)
        reply[reply_len++] = digits[--n];
    reply[reply_len] = 0;
}

static void put_kv(const char *key, uint32_t v)
{
    put_str(" ");
    put_str(key);
    put_str("=");
    put_u32(v);
}

/* Start a reply: "<seq> " or "- " when the line carried no valid sequence number. */
static void begin_reply(int32_t seq)
{
    reply_len = 0;
    reply[0] = 0;
    if (seq < 0)
        put_str("-");
    else
        put_u32((uint32_t)seq);
}

static void begin_error(int32_t seq, const char *code)
{
    begin_reply(seq);
    put_str(" ERR ");
    put_str(code);
    error_count++;
}

static void send_reply(void)
{
    tx_str(reply);
    tx_str("\n");
}

/* -------------------------------------------------------------------------- repeated-sequence cache */
struct cached {
    int32_t seq; /* -1 = empty */
    char line[LINE_MAX + 1];
    char reply[REPLY_MAX];
};
static struct cached cache[CACHE_SIZE];
static uint8_t cache_next;

static const char *cache_find(int32_t seq, const char *line)
{
    for (uint8_t i = 0; i < CACHE_SIZE; i++)
        if (cache[i].seq == seq && strcmp(cache[i].line, line) == 0)
            return cache[i].reply;
    return 0;
}

static void cache_store(int32_t seq, const char *line)
{
    struct cached *c = &cache[cache_next];
    cache_next = (uint8_t)((cache_next + 1) % CACHE_SIZE);
    c->seq = seq;
    strncpy(c->line, line, LINE_MAX);
    c->line[LINE_MAX] = 0;
    memcpy(c->reply, reply, REPLY_MAX);
}

/* ------------------------------------------------------------------------------------------ parsing */
/* Parse an unsigned decimal of 1..5 digits at *p (<= 65535); advances *p. Returns -1 on failure. */
static int32_t parse_u16(const char **p)
{
    const char *s = *p;
    uint32_t v = 0;
    uint8_t n = 0;
    while (*s >= '0' && *s <= '9') {
        if (++n > 5)
            return -1;
        v = v * 10 + (uint32_t)(*s - '0');
        s++;
    }
    if (n == 0 || v > 65535u)
        return -1;
    *p = s;
    return (int32_t)v;
}

static void skip_spaces(const char **p)
{
    while (**p == ' ')
        (*p)++;
}

/* Parse up to max_args space-separated numbers to the end of the line; returns the count or -1. */
static int8_t parse_args(const char *p, int32_t *args, uint8_t max_args)
{
    uint8_t n = 0;
    for (;;) {
        skip_spaces(&p);
        if (*p == 0)
            return (int8_t)n;
        if (n == max_args)
            return -1;
        int32_t v = parse_u16(&p);
        if (v < 0 || (*p != ' ' && *p != 0))
            return -1;
        args[n++] = v;
    }
}

/* Leading sequence number of a line (used also for lines rejected as overlong or noisy). */
static int32_t leading_seq(const char *line, const char **rest)
{
    const char *p = line;
    int32_t seq = parse_u16(&p);
    if (seq < 0 || *p != ' ')
        return -1;
    *rest = p;
    return seq;
}

/* ----------------------------------------------------------------------------------------- commands */
static void wait_tick_consumed(void)
{
    while (read16(&valve_request) || read16(&opto_request))
        idle_until_interrupt();
}

/* Reward (valve) with an optional opto pulse; both start on the same tick. */
static void cmd_reward(int32_t seq, const char *verb, int32_t req_ms, int32_t opto_ms)
{
    uint32_t t = millis();
    if (req_ms < 1 || (opto_ms >= 0 && (opto_ms < 1 || (uint32_t)opto_ms > OPTO_MAX_MS))) {
        begin_error(seq, "RANGE");
        return;
    }
    if (rewarded_once && (uint32_t)(t - last_reward_ms) < min_interval_ms) {
        begin_error(seq, "INTERVAL");
        put_kv("wait", min_interval_ms - (t - last_reward_ms));
        return;
    }
    if (read16(&valve_left) || (opto_ms >= 0 && read16(&opto_left))) {
        begin_error(seq, "BUSY");
        return;
    }
    uint16_t open = (uint16_t)req_ms > max_open_ms ? max_open_ms : (uint16_t)req_ms;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        valve_request = open;
        if (opto_ms > 0)
            opto_request = (uint16_t)opto_ms;
    }
    wait_tick_consumed();
    if (wdog_tripped) { /* cannot happen right after a command, but never claim a pulse we cut */
        begin_error(seq, "WATCHDOG");
        return;
    }
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { last_reward_ms = valve_open_at; }
    rewarded_once = 1;
    reward_count++;
    begin_reply(seq);
    put_str(" OK ");
    put_str(verb);
    put_kv("open", open);
    put_kv("req", (uint32_t)req_ms);
    if (opto_ms > 0)
        put_kv("opto", (uint32_t)opto_ms);
    put_kv("t", last_reward_ms);
}

static void cmd_opto(int32_t seq, int32_t ms)
{
    if (ms < 1 || (uint32_t)ms > OPTO_MAX_MS) {
        begin_error(seq, "RANGE");
        return;
    }
    if (read16(&opto_left)) {
        begin_error(seq, "BUSY");
        return;
    }
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { opto_request = (uint16_t)ms; }
    wait_tick_consumed();
    uint32_t opened;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { opened = opto_open_at; }
    begin_reply(seq);
    put_str(" OK O");
    put_kv("opto", (uint32_t)ms);
    put_kv("t", opened);
}

static void reply_limits(int32_t seq)
{
    begin_reply(seq);
    put_str(" OK L");
    put_kv("max_open", max_open_ms);
    put_kv("min_interval", min_interval_ms);
    put_kv("watchdog", watchdog_ms);
}

static void cmd_limits(int32_t seq, int8_t n, const int32_t *a)
{
    if (n == 3) {
        if (a[0] < 1 || a[0] > 10000 || a[1] > 60000 || a[2] < 100 || a[2] > 60000) {
            begin_error(seq, "RANGE");
            return;
        }
        max_open_ms = (uint16_t)a[0];
        min_interval_ms = (uint16_t)a[1];
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { watchdog_ms = (uint16_t)a[2]; }
    } else if (n != 0) {
        begin_error(seq, "SYNTAX");
        return;
    }
    reply_limits(seq);
}

static void cmd_status(int32_t seq)
{
    begin_reply(seq);
    put_str(" OK S");
    put_kv("valve", read16(&valve_left) ? 1 : 0);
    put_kv("opto", read16(&opto_left) ? 1 : 0);
    put_kv("t", millis());
    put_kv("rewards", reward_count);
    put_kv("licks", lick_count);
    put_kv("errors", error_count);
    put_kv("wdog", wdog_trips);
}

/* Execute one well-formed line "<seq> <VERB> [args]" (seq already parsed). */
static void execute(int32_t seq, const char *rest)
{
    skip_spaces(&rest);
    char verb[3] = {0, 0, 0};
    uint8_t vn = 0;
    while (*rest >= 'A' && *rest <= 'Z' && vn < 3)
        verb[vn++] = *rest++;
    if (vn == 0 || vn > 2 || (*rest != ' ' && *rest != 0)) {
        begin_error(seq, vn ? "UNKNOWN" : "SYNTAX");
        return;
    }
    int32_t a[3];
    int8_t n = parse_args(rest, a, 3);
    if (n < 0) {
        begin_error(seq, "SYNTAX");
        return;
    }
    if (!strcmp(verb, "R") && n == 1)
        cmd_reward(seq, "R", a[0], -1);
    else if (!strcmp(verb, "RO") && n == 2)
        cmd_reward(seq, "RO", a[0], a[1]);
    else if (!strcmp(verb, "O") && n == 1)
        cmd_opto(seq, a[0]);
    else if (!strcmp(verb, "L"))
        cmd_limits(seq, n, a);
    else if (!strcmp(verb, "S") && n == 0)
        cmd_status(seq);
    else if (!strcmp(verb, "V") && n == 0) {
        begin_reply(seq);
        put_str(" OK V " FW_NAME " " FW_VERSION " proto=" PROTO_VERSION);
    } else if (!strcmp(verb, "P") && n == 0) {
        begin_reply(seq);
        put_str(" OK P");
        put_kv("t", millis());
    } else if (!strcmp(verb, "C") && n == 0) {
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { outputs_off(); }
        begin_reply(seq);
        put_str(" OK C");
        put_kv("t", millis());
    } else if (!strcmp(verb, "R") || !strcmp(verb, "RO") || !strcmp(verb, "O") || !strcmp(verb, "S") ||
               !strcmp(verb, "V") || !strcmp(verb, "P") || !strcmp(verb, "C"))
        begin_error(seq, "SYNTAX"); /* known verb, wrong number of arguments */
    else
        begin_error(seq, "UNKNOWN");
}

/* ------------------------------------------------------------------------------------ line assembly */
static char line[LINE_MAX + 1];
static uint8_t line_len;
static uint8_t line_overlong, line_noise;
static uint32_t line_started_ms;

static void reset_line(void)
{
    line_len = 0;
    line[0] = 0;
    line_overlong = line_noise = 0;
}

static void finish_line(void)
{
    const char *rest = 0;
    int32_t seq = leading_seq(line, &rest);
    if (line_noise) {
        begin_error(seq, "NOISE");
    } else if (line_overlong) {
        begin_error(seq, "LONG");
    } else if (seq < 0) {
        begin_error(-1, "SYNTAX");
    } else {
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
        {
            last_host_ms = now_ms;
            wdog_tripped = 0;
        }
        const char *cached = cache_find(seq, line);
        if (cached) { /* a retransmission: answer again, never act again */
            tx_str(cached);
            tx_str("\n");
            reset_line();
            return;
        }
        execute(seq, rest);
        cache_store(seq, line);
    }
    send_reply();
    reset_line();
}

static void handle_byte(uint8_t c)
{
    if (c == '\n') {
        if (line_len || line_noise || line_overlong)
            finish_line();
        return;
    }
    if (c == '\r')
        return;
    if (line_len == 0 && !line_noise && !line_overlong)
        line_started_ms = millis();
    if (c < 0x20 || c > 0x7e) {
        line_noise = 1;
        return;
    }
    if (line_len >= LINE_MAX) {
        line_overlong = 1;
        return;
    }
    line[line_len++] = (char)c;
    line[line_len] = 0;
}

/* ------------------------------------------------------------------------------------------- events */
static void report_events(void)
{
    while (lick_tail != lick_head) {
        uint32_t t;
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
        {
            t = lick_queue[lick_tail];
            lick_tail = (uint8_t)((lick_tail + 1) % LICK_QUEUE);
        }
        lick_count++;
        reply_len = 0;
        put_str("! LICK");
        put_kv("t", t);
        send_reply();
    }
    if (licks_dropped) {
        uint8_t n;
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
        {
            n = licks_dropped;
            licks_dropped = 0;
        }
        reply_len = 0;
        put_str("! LICKDROP");
        put_kv("n", n);
        send_reply();
    }
    if (wdog_report) {
        wdog_report = 0;
        reply_len = 0;
        put_str("! WDOG");
        put_kv("t", millis());
        send_reply();
    }
}

/* ------------------------------------------------------------------------------------------- main */
int main(void)
{
    /* Valve and opto closed before anything else. */
    PORTB &= (uint8_t) ~(_BV(VALVE_BIT) | _BV(OPTO_BIT));
    DDRB |= _BV(VALVE_BIT) | _BV(OPTO_BIT);
    DDRD &= (uint8_t) ~_BV(LICK_BIT);
    PORTD &= (uint8_t) ~_BV(LICK_BIT);

    uint8_t reset_cause = MCUSR;
    MCUSR = 0;
    wdt_disable();

    for (uint8_t i = 0; i < CACHE_SIZE; i++)
        cache[i].seq = -1;

    /* Timer0: CTC, /64, OCR0A = 249 -> 1 kHz. */
    TCCR0A = _BV(WGM01);
    TCCR0B = _BV(CS01) | _BV(CS00);
    OCR0A = 249;
    TIMSK0 = _BV(OCIE0A);

    /* UART0: 115200 8N1, double speed (UBRR 16 -> 117647 baud, 2.1 % off, within tolerance). */
    UCSR0A = _BV(U2X0); /* before UBRR0: simavr derives its byte time when UBRR0L is written */
    UBRR0 = 16;
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);

    set_sleep_mode(SLEEP_MODE_IDLE);
    reset_line();
    sei();
    wdt_enable(WDTO_500MS);

    reply_len = 0;
    put_str("! BOOT " FW_NAME " " FW_VERSION " proto=" PROTO_VERSION);
    put_kv("reset", reset_cause);
    send_reply();

    for (;;) {
        wdt_reset();
        int c;
        while ((c = rx_byte()) >= 0)
            handle_byte((uint8_t)c);
        if (rx_overrun) {
            rx_overrun = 0;
            line_noise = 1; /* bytes were lost: the current line cannot be trusted */
        }
        report_events();
        if ((line_len || line_noise || line_overlong) &&
            (uint32_t)(millis() - line_started_ms) >= PARTIAL_TIMEOUT_MS) {
            const char *rest;
            begin_error(leading_seq(line, &rest), "PARTIAL");
            send_reply();
            reset_line();
        }
        cli();
        if (rx_head == rx_tail && lick_head == lick_tail && !wdog_report) {
            sleep_enable();
            sei();
            sleep_cpu();
            sleep_disable();
        }
        sei();
    }
}
