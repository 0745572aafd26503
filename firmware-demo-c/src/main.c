/*
 * A sensor's firmware in C on QEMU's mps2-an386 (Cortex-M4F), with the twinhub engine
 * through its C API (twinhub.h) and a RAM store written against the callback table. It
 * does what the Rust firmware-demo does, over the same UARTs and the same wire, so the
 * same `twinhub gateway` and the same end-to-end checks apply.
 *
 * SysTick interrupts every millisecond; each tick advances the device clock by TICK_MS, a
 * time-lapse so that minutes of the device's life take seconds. The main loop sleeps until
 * an interrupt (a tick or a received byte), samples a simulated sensor every SAMPLE_MS (a
 * normal reading; every CRITICAL_EVERYth one is a critical alarm), and drives the engine
 * as a device would: enqueue, hand out transmits, report outcomes; the engine times out
 * transmits that get no answer. Interrupt handlers only count ticks and clear flags:
 * nothing of twinhub runs in an interrupt.
 *
 * Two links reach the gateway, both UARTs of the board (CMSDK APB UART, which QEMU
 * connects to TCP sockets with -serial): UART0 "uart" (free) and UART1 "satellite"
 * (costly: critical records only, a small daily budget, armed only after the UART has
 * been down for a minute). The gateway acks each record once it is durable, and only a
 * full set of acks delivers a transmit and frees its records.
 *
 * After RUN_MS it stops sampling, waits for its outbox to drain, prints its counts over
 * semihosting and exits; it fails (exit status 1) if a record was dropped, a normal record
 * crossed the satellite, the satellite carried more bytes than its budget, or it was used
 * before the UART had been silent for arm_after.
 */
#include <semihost.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ram_store.h"
#include "twinhub.h"

/* Device milliseconds per SysTick interrupt (one per millisecond of QEMU's clock). */
#define TICK_MS 20u
/* The mps2-an386 system clock, and so SysTick's reload for one interrupt per ms. */
#define SYSCLK_HZ 25000000u
/* How long the device samples. */
#define RUN_MS 600000u
/* Longest wait for the outbox to drain after sampling stops. */
#define DRAIN_MS 300000u
/* Device time between sensor readings. */
#define SAMPLE_MS 2000u
/* Device time between progress lines: what lets a test tell slow from stuck. */
#define BEAT_MS 30000u
/* Every this many readings is a critical alarm. */
#define CRITICAL_EVERY 5u
/* Bytes the satellite may carry per day, everything included. */
#define SAT_BUDGET 512u
/* Of which the line's own messages (hellos) may take this much; records get the rest. A
 * record costs no more on the line than the engine charges for it, so the line stays
 * within SAT_BUDGET. */
#define SAT_LINE_RESERVE 64u
/* The satellite is armed only after the UART has been down this long. */
#define ARM_AFTER_MS 60000u
/* The record store's arena. */
#define ARENA 4096u
/* The device's id. */
#define DEVICE "sensor-c7"
/* The start count: this device keeps nothing across boots, so it is always the first. The
 * Rust firmware is moving to a flash store that keeps a boot counter; this one keeps
 * records in RAM for now. */
#define EPOCH 1u
/* A transmit without an answer after this times out. */
#define REQUEST_TIMEOUT_MS 5000u
/* Records one transmit may carry (the endpoint's batch limit). */
#define BATCH 8u
/* Transmits in flight at once. */
#define SLOTS 4u

/* The board's peripherals. */
#define UART0 0x40004000u
#define UART1 0x40005000u
#define UART_DATA 0x00u
#define UART_STATE 0x04u
#define UART_CTRL 0x08u
#define UART_INTSTATUS 0x0cu
#define UART_BAUDDIV 0x10u
#define UART_TX_FULL 1u
#define UART_RX_FULL 2u
#define SYST_CSR (*(volatile uint32_t *)0xe000e010u)
#define SYST_RVR (*(volatile uint32_t *)0xe000e014u)
#define SYST_CVR (*(volatile uint32_t *)0xe000e018u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xe000e100u)
/* NVIC lines of the UARTs' receive interrupts. */
#define IRQ_UART0_RX 0u
#define IRQ_UART1_RX 2u

static volatile uint32_t ticks;

static volatile uint32_t *reg(uint32_t base, uint32_t off) {
    return (volatile uint32_t *)(uintptr_t)(base + off);
}

static void uart_init(uint32_t base) {
    /* The divider only has to be legal (>= 16): the line's speed is QEMU's socket's. */
    *reg(base, UART_BAUDDIV) = 16;
    *reg(base, UART_CTRL) = 0xb; /* TX, RX, RX interrupt */
}

static bool uart_read(uint32_t base, uint8_t *byte) {
    if (!(*reg(base, UART_STATE) & UART_RX_FULL)) return false;
    *byte = (uint8_t)*reg(base, UART_DATA);
    return true;
}

static void uart_write(uint32_t base, const uint8_t *bytes, size_t len) {
    for (size_t i = 0; i < len; i++) {
        while (*reg(base, UART_STATE) & UART_TX_FULL) {
        }
        *reg(base, UART_DATA) = bytes[i];
    }
}

static uint32_t port_of(unsigned link) { return link == 0 ? UART0 : UART1; }

/* ---- The console. ---- */

/* Semihosting's ":tt" stream, the host's standard output (what the Rust firmware's
 * hprintln writes to), a line at a time. picolibc's own semihosting stdout writes a
 * character at a time to the semihosting console, which QEMU sends to its stderr. */
static char console_line[192];
static size_t console_len;
static int console_fd = -1;

static int console_put(char c, FILE *f) {
    (void)f;
    if (console_len < sizeof console_line) console_line[console_len++] = c;
    if (c == '\n' || console_len == sizeof console_line) {
        if (console_fd < 0) console_fd = sys_semihost_open(":tt", 4 /* "w" */);
        sys_semihost_write(console_fd, console_line, console_len);
        console_len = 0;
    }
    return (unsigned char)c;
}

static FILE console = FDEV_SETUP_STREAM(console_put, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdout = &console;

/* ---- Exceptions and interrupts: they count and clear, nothing more. ---- */

static void systick_isr(void) { ticks++; }

/* Any external interrupt is a UART's receive interrupt: clear it so it does not fire again;
 * the main loop, woken by it, reads the byte. */
static void uart_isr(void) {
    *reg(UART0, UART_INTSTATUS) = 0xf;
    *reg(UART1, UART_INTSTATUS) = 0xf;
}

static void semihost_fail(void) { sys_semihost_exit(ADP_Stopped_RunTimeErrorUnknown, 1); }

/* A fault is reported and fails the run at once, rather than looping unseen. */
void hardfault_report(const uint32_t *frame);
void hardfault_report(const uint32_t *frame) {
    printf("firmware: FAILED: hard fault at pc %#010lx\n", (unsigned long)frame[6]);
    semihost_fail();
}

__attribute__((naked)) static void hardfault_isr(void) {
    __asm volatile("tst lr, #4\n"
                   "ite eq\n"
                   "mrseq r0, msp\n"
                   "mrsne r0, psp\n"
                   "b hardfault_report\n");
}

static void halt_isr(void) {
    printf("firmware: FAILED: unexpected exception\n");
    semihost_fail();
}

extern uint8_t __stack[];
extern void _start(void);

/* The vector table: the core's 16 entries, then the board's external interrupts. It
 * replaces picolibc's weak one (which has no external interrupts). */
__attribute__((section(".data.init.enter"), used, aligned(256)))
void *const __interrupt_vector[16 + 32] = {
    [0] = __stack,
    [1] = (void *)_start,
    [2] = (void *)halt_isr,      /* NMI */
    [3] = (void *)hardfault_isr, /* HardFault */
    [4] = (void *)hardfault_isr, /* MemManage */
    [5] = (void *)hardfault_isr, /* BusFault */
    [6] = (void *)hardfault_isr, /* UsageFault */
    [11] = (void *)halt_isr,     /* SVCall */
    [12] = (void *)halt_isr,     /* DebugMonitor */
    [14] = (void *)halt_isr,     /* PendSV */
    [15] = (void *)systick_isr,
    [16 + IRQ_UART0_RX] = (void *)uart_isr,
    [16 + 1] = (void *)uart_isr,
    [16 + IRQ_UART1_RX] = (void *)uart_isr,
    [16 + 3] = (void *)uart_isr,
};

/* ---- The device. ---- */

static void fail(const char *why) {
    printf("firmware: FAILED: %s\n", why);
    semihost_fail();
}

#define MUST(call, why)                                                                   \
    do {                                                                                  \
        twinhub_result r_ = (call);                                                       \
        if (r_ != TWINHUB_OK) {                                                           \
            printf("firmware: FAILED: %s: %s\n", why, twinhub_result_name(r_));           \
            semihost_fail();                                                              \
        }                                                                                 \
    } while (0)

/* A transmit on the line, waiting for the gateway's acks. */
typedef struct inflight {
    bool used;
    bool rejected;
    uint32_t tx;
    uint64_t seqs[BATCH];
    bool acked[BATCH];
    size_t len;
    uint64_t forget_at; /* after this the engine has timed the transmit out itself */
} inflight;

/* What the device counts of its own lines. */
typedef struct lines {
    uint64_t bytes[2];
    uint32_t critical_over_satellite;
    uint32_t normal_over_satellite;
    uint64_t last_uart_ack_ms;
    uint32_t early_satellite;
    uint32_t acks;
} lines;

static twinhub_producer producer;
static ram_store store;
static _Alignas(8) uint8_t arena[ARENA];
static uint8_t frame_buf[64];
static uint8_t tx_buf[512];
static uint8_t out[256];
static uint8_t rx_buf[2][64];
static twinhub_wire_rx rx[2];
static inflight slots[SLOTS];
static lines line;

/* Says who is on `link`; the bytes count against the line. */
static void hello(unsigned link) {
    size_t n;
    MUST(twinhub_wire_hello(DEVICE, out, sizeof out, &n), "hello");
    uart_write(port_of(link), out, n);
    line.bytes[link] += n;
}

/* Marks record `seq` acked (or rejected) in whichever transmit holds it. */
static void mark(uint64_t seq, bool rejected) {
    for (unsigned i = 0; i < SLOTS; i++) {
        inflight *f = &slots[i];
        if (!f->used) continue;
        for (size_t j = 0; j < f->len; j++) {
            if (f->seqs[j] == seq) {
                f->acked[j] = true;
                f->rejected |= rejected;
            }
        }
    }
}

/* A reading of the simulated sensor: sample number and a temperature in centi-degrees. */
static void sensor(uint32_t n, uint8_t payload[8]) {
    int32_t centi = 2000 + (int32_t)((n * 37u) % 500u);
    memcpy(payload, &n, 4);
    memcpy(payload + 4, &centi, 4);
}

/* The device's configuration: one endpoint (the gateway) over two links. */
static void configure(twinhub_config *cfg, uint8_t *uart, uint8_t *sat) {
    MUST(twinhub_config_init(cfg, DEVICE), "config");
    uint8_t gateway;
    MUST(twinhub_config_add_endpoint(cfg, "gateway", &gateway), "endpoint");
    MUST(twinhub_config_set_endpoint_limits(cfg, gateway, 256 * 1024 - 1024, 256 * 1024, BATCH, 0),
         "endpoint limits");
    MUST(twinhub_config_add_link(cfg, "uart", TWINHUB_COST_FREE, uart), "uart");
    MUST(twinhub_config_add_link(cfg, "satellite", TWINHUB_COST_COSTLY, sat), "satellite");
    MUST(twinhub_config_set_link_budget(cfg, *sat, SAT_BUDGET - SAT_LINE_RESERVE,
                                        24ull * 3600 * 1000),
         "budget");
    MUST(twinhub_config_set_link_allow(cfg, *sat, TWINHUB_CLASSES_CRITICAL), "allow");
    MUST(twinhub_config_set_link_arm_after(cfg, *sat, ARM_AFTER_MS), "arm_after");
    twinhub_timings t;
    MUST(twinhub_timings_default(&t), "timings");
    t.request_timeout_ms = REQUEST_TIMEOUT_MS;
    MUST(twinhub_config_set_timings(cfg, &t), "timings");
    char why[96];
    if (twinhub_config_check(cfg, why, sizeof why, NULL) != TWINHUB_OK) fail(why);
}

/* Prints the device's counts and exits: success only if every promise held. */
static void report(uint8_t uart, uint32_t samples) {
    twinhub_stats s;
    MUST(twinhub_producer_stats(&producer, &s), "stats");
    unsigned long sat = (unsigned long)line.bytes[1 - uart];
    printf("firmware: device %s epoch %u samples %lu accepted %lu delivered %lu pending %lu "
           "dropped %lu acks %lu\n",
           DEVICE, EPOCH, (unsigned long)samples, (unsigned long)s.accepted,
           (unsigned long)s.delivered, (unsigned long)s.pending, (unsigned long)s.dropped,
           (unsigned long)line.acks);
    printf("firmware: uart bytes %lu satellite bytes %lu budget %u critical over satellite %lu "
           "normal over satellite %lu early satellite %lu failovers %lu\n",
           (unsigned long)line.bytes[uart], sat, SAT_BUDGET,
           (unsigned long)line.critical_over_satellite,
           (unsigned long)line.normal_over_satellite, (unsigned long)line.early_satellite,
           (unsigned long)s.failovers);
    bool ok = s.pending == 0 && s.dropped == 0 && s.accepted == samples &&
              line.normal_over_satellite == 0 && line.early_satellite == 0 && sat <= SAT_BUDGET;
    if (!ok) fail("a promise was broken");
    printf("firmware: ok\n");
    sys_semihost_exit(ADP_Stopped_ApplicationExit, 0);
}

int main(void) {
    SYST_RVR = SYSCLK_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7; /* core clock, interrupt, enable */
    uart_init(UART0);
    uart_init(UART1);
    NVIC_ISER0 = (1u << IRQ_UART0_RX) | (1u << IRQ_UART1_RX);

    /* The configuration is read at init and not kept: it lives on the stack. */
    twinhub_config cfg;
    uint8_t uart, sat;
    configure(&cfg, &uart, &sat);
    twinhub_store table;
    ram_store_init(&store, arena, sizeof arena, EPOCH - 1);
    ram_store_table(&store, &table, frame_buf, sizeof frame_buf);
    MUST(twinhub_producer_init(&producer, &cfg, &table, 0, 0, 0x5eed), "init");
    uint32_t epoch;
    MUST(twinhub_producer_epoch(&producer, &epoch), "epoch");
    if (epoch != EPOCH) fail("epoch");

    for (unsigned link = 0; link < 2; link++) {
        MUST(twinhub_wire_rx_init(&rx[link], rx_buf[link], sizeof rx_buf[link]), "rx");
        hello(link);
    }
    uint64_t next_sample = SAMPLE_MS, next_beat = BEAT_MS;
    uint32_t samples = 0;

    for (;;) {
        __asm volatile("wfi");
        uint64_t now = (uint64_t)ticks * TICK_MS;

        if (now >= next_sample && now < RUN_MS) {
            samples++;
            twinhub_class class =
                samples % CRITICAL_EVERY == 0 ? TWINHUB_CLASS_CRITICAL : TWINHUB_CLASS_NORMAL;
            uint8_t payload[8];
            sensor(samples, payload);
            MUST(twinhub_producer_enqueue(&producer, now, payload, sizeof payload, class, NULL,
                                          NULL),
                 "enqueue refused");
            next_sample += SAMPLE_MS;
        }

        /* Answers from the gateway, on either line. */
        for (unsigned link = 0; link < 2; link++) {
            uint8_t byte;
            while (uart_read(port_of(link), &byte)) {
                twinhub_downlink msg;
                /* Mid-message, or line noise the next zero resynchronises: the transmit a
                 * damaged answer belonged to times out and is sent again. */
                if (twinhub_wire_rx_push(&rx[link], byte, &msg) != TWINHUB_OK) continue;
                switch (msg.kind) {
                case TWINHUB_DOWNLINK_ACK:
                    if (msg.key.epoch != EPOCH) break;
                    line.acks++;
                    if (link == uart) line.last_uart_ack_ms = now;
                    mark(msg.key.seq, false);
                    break;
                case TWINHUB_DOWNLINK_REJECT:
                    if (msg.key.epoch == EPOCH) mark(msg.key.seq, true);
                    break;
                case TWINHUB_DOWNLINK_IDENTIFY:
                    hello(link);
                    break;
                default:
                    break;
                }
            }
        }
        for (unsigned i = 0; i < SLOTS; i++) {
            inflight *f = &slots[i];
            if (!f->used) continue;
            bool all = true;
            for (size_t j = 0; j < f->len; j++) all &= f->acked[j];
            if (f->rejected) {
                MUST(twinhub_producer_handle_outcome(&producer, now, f->tx,
                                                     TWINHUB_OUTCOME_REJECTED_MALFORMED, 0),
                     "outcome");
                f->used = false;
            } else if (all) {
                MUST(twinhub_producer_handle_outcome(&producer, now, f->tx,
                                                     TWINHUB_OUTCOME_DELIVERED, 0),
                     "outcome");
                f->used = false;
            } else if (now >= f->forget_at) {
                f->used = false;
            }
        }
        uint64_t at;
        if (twinhub_producer_poll_timeout(&producer, &at) == TWINHUB_OK && at <= now)
            MUST(twinhub_producer_handle_timeout(&producer, now), "timeout");

        for (;;) {
            inflight *f = NULL;
            for (unsigned i = 0; i < SLOTS && !f; i++)
                if (!slots[i].used) f = &slots[i];
            if (!f) break;
            twinhub_transmit tx;
            twinhub_result r =
                twinhub_producer_poll_transmit(&producer, now, tx_buf, sizeof tx_buf, &tx, NULL);
            if (r == TWINHUB_NONE) break;
            MUST(r, "poll_transmit");
            memset(f, 0, sizeof *f);
            f->used = true;
            f->tx = tx.id;
            f->forget_at = now + REQUEST_TIMEOUT_MS + 1000;
            if (tx.link != uart && now < line.last_uart_ack_ms + ARM_AFTER_MS)
                line.early_satellite++;
            size_t offset = 0;
            twinhub_record rec;
            while ((r = twinhub_transmit_record(tx_buf, tx.len, &offset, &rec)) == TWINHUB_OK) {
                if (f->len == BATCH) fail("transmit larger than its batch limit");
                f->seqs[f->len++] = rec.key.seq;
                if (tx.link != uart) {
                    if (rec.record_class == TWINHUB_CLASS_CRITICAL)
                        line.critical_over_satellite++;
                    else
                        line.normal_over_satellite++;
                }
                size_t n;
                MUST(twinhub_wire_record(&rec, out, sizeof out, &n), "encode");
                uart_write(port_of(tx.link), out, n);
                line.bytes[tx.link] += n;
            }
            if (r != TWINHUB_NONE) fail("bad frame");
        }
        twinhub_event ev;
        while (twinhub_producer_poll_event(&producer, &ev) == TWINHUB_OK) {
        }

        twinhub_stats s;
        MUST(twinhub_producer_stats(&producer, &s), "stats");
        if (now >= next_beat) {
            printf("firmware: t %lu accepted %lu delivered %lu pending %lu acks %lu\n",
                   (unsigned long)now, (unsigned long)s.accepted, (unsigned long)s.delivered,
                   (unsigned long)s.pending, (unsigned long)line.acks);
            next_beat = now + BEAT_MS;
        }
        bool drained = now >= RUN_MS && s.pending == 0;
        if (drained || now >= RUN_MS + DRAIN_MS) report(uart, samples);
    }
}
