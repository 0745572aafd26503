/*
 * The README's outage story, driven through the C API with a C RAM store: the primary
 * region goes dark (the device fails over to the secondary over its free WAN), the WAN
 * dies too, cellular carries on, cellular dies, and only critical alarms cross the
 * satellite, within budget; everything heals and the device fails back. It prints what
 * sdk-nostd/examples/outage.rs prints, line for line, so the test can compare the two.
 *
 * It also checks that misuse comes back as statuses: NULL pointers, values outside an
 * enum, uninitialised storage, buffers too small (with the size needed), re-entry.
 */
#include <stdio.h>
#include <string.h>

#include "ram_store.h"
#include "twinhub.h"

#define CHECK(call)                                                                       \
    do {                                                                                  \
        twinhub_result r_ = (call);                                                       \
        if (r_ != TWINHUB_OK) {                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                 \
                    twinhub_result_name(r_));                                             \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

#define EXPECT(call, want)                                                                \
    do {                                                                                  \
        twinhub_result r_ = (call);                                                       \
        if (r_ != (want)) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s, expected %s\n", __FILE__, __LINE__, #call,   \
                    twinhub_result_name(r_), twinhub_result_name(want));                  \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

static twinhub_producer producer;
static _Alignas(8) uint8_t arena[64 * 1024];
static uint8_t frame_buf[256];
static uint8_t buf[16 * 1024];

static const char *endpoint_names[] = {"primary", "secondary"};
static const char *link_names[] = {"wan", "cell", "satellite"};

/* When each fault is on, in simulated seconds. */
static int within(uint64_t t, uint64_t from, uint64_t to) { return t >= from && t < to; }

static twinhub_outcome world(uint64_t t, const twinhub_transmit *tx) {
    int link_down = (tx->link == 0 && within(t, 1200, 4800)) ||
                    (tx->link == 1 && within(t, 1800, 4200));
    if (link_down || (tx->endpoint == 0 && within(t, 600, 2400)))
        return TWINHUB_OUTCOME_UNREACHABLE;
    return TWINHUB_OUTCOME_DELIVERED;
}

static void print_event(uint64_t t, const twinhub_event *ev) {
    char clock[16];
    snprintf(clock, sizeof clock, "%02u:%02u:%02u", (unsigned)(9 + t / 3600),
             (unsigned)(t / 60 % 60), (unsigned)(t % 60));
    static const char *causes[] = {"None", "Region", "Link", "Auth", "Throttled"};
    switch (ev->kind) {
    case TWINHUB_EVENT_FAILED_OVER:
        printf("%s  failed over %s -> %s\n", clock, endpoint_names[ev->endpoint],
               endpoint_names[ev->to_endpoint]);
        break;
    case TWINHUB_EVENT_FAILED_BACK:
        printf("%s  failed back %s -> %s\n", clock, endpoint_names[ev->endpoint],
               endpoint_names[ev->to_endpoint]);
        break;
    case TWINHUB_EVENT_ROUTE_DOWN:
        printf("%s  route %s via %s down (%s)\n", clock, endpoint_names[ev->endpoint],
               link_names[ev->link], causes[ev->cause]);
        break;
    case TWINHUB_EVENT_ROUTE_UP:
        printf("%s  route %s via %s up\n", clock, endpoint_names[ev->endpoint],
               link_names[ev->link]);
        break;
    case TWINHUB_EVENT_LINK_DOWN:
        printf("%s  link %s down\n", clock, link_names[ev->link]);
        break;
    case TWINHUB_EVENT_LINK_ARMED:
        printf("%s  %s armed for critical records\n", clock, link_names[ev->link]);
        break;
    case TWINHUB_EVENT_LINK_DISARMED:
        printf("%s  %s disarmed\n", clock, link_names[ev->link]);
        break;
    case TWINHUB_EVENT_BUDGET_EXHAUSTED:
        printf("%s  %s budget used up for today\n", clock, link_names[ev->link]);
        break;
    default:
        printf("%s  event %u\n", clock, (unsigned)ev->kind);
    }
}

/* A store whose callbacks call back into the producer: refused, not undefined. */
static twinhub_result reentrant_status = TWINHUB_OK;
static bool reentrant_fits(void *u, size_t frame_len) {
    (void)u;
    (void)frame_len;
    uint32_t epoch;
    reentrant_status = twinhub_producer_epoch(&producer, &epoch);
    return true;
}

static int misuse(void) {
    twinhub_config cfg;
    twinhub_producer fresh;
    memset(&fresh, 0, sizeof fresh);
    uint64_t at;
    EXPECT(twinhub_producer_poll_timeout(&fresh, &at), TWINHUB_ERR_NOT_INITIALIZED);
    EXPECT(twinhub_producer_poll_timeout(NULL, &at), TWINHUB_ERR_NULL_POINTER);
    EXPECT(twinhub_config_init(&cfg, "no spaces allowed"), TWINHUB_ERR_DEVICE_ID);
    EXPECT(twinhub_config_init(&cfg, NULL), TWINHUB_ERR_NULL_POINTER);
    CHECK(twinhub_config_init(&cfg, "sensor-0001"));
    EXPECT(twinhub_config_add_link(&cfg, "wan", (twinhub_cost)42, NULL),
           TWINHUB_ERR_INVALID_ARGUMENT);
    EXPECT(twinhub_config_set_routing(&cfg, (twinhub_routing)7), TWINHUB_ERR_INVALID_ARGUMENT);
    char msg[80];
    size_t need = 0;
    EXPECT(twinhub_config_check(&cfg, msg, sizeof msg, &need), TWINHUB_ERR_CONFIG);
    if (strcmp(msg, "endpoint: at least one endpoint is required") != 0) {
        fprintf(stderr, "config message: %s\n", msg);
        return 1;
    }
    for (int i = 0; i < TWINHUB_MAX_ENDPOINTS; i++) {
        char name[8];
        snprintf(name, sizeof name, "e%d", i);
        CHECK(twinhub_config_add_endpoint(&cfg, name, NULL));
    }
    EXPECT(twinhub_config_add_endpoint(&cfg, "e9", NULL), TWINHUB_ERR_TOO_MANY);

    /* A store table with a callback missing is refused. */
    ram_store rs;
    twinhub_store table;
    ram_store_init(&rs, arena, sizeof arena, 0);
    ram_store_table(&rs, &table, frame_buf, sizeof frame_buf);
    table.read = NULL;
    EXPECT(twinhub_producer_init(&fresh, &cfg, &table, 0, 1, 1), TWINHUB_ERR_NULL_POINTER);
    ram_store_table(&rs, &table, frame_buf, sizeof frame_buf);
    table.next_epoch = NULL;
    EXPECT(twinhub_producer_init(&fresh, &cfg, &table, 0, 0, 1), TWINHUB_ERR_INVALID_ARGUMENT);

    /* Re-entry from a store callback is refused with TWINHUB_ERR_BUSY. */
    table.fits = reentrant_fits;
    CHECK(twinhub_producer_init(&producer, &cfg, &table, 0, 1, 1));
    uint8_t payload[300] = {0};
    uint32_t limit = 0;
    EXPECT(twinhub_producer_enqueue(&producer, 0, payload, sizeof payload, TWINHUB_CLASS_NORMAL,
                                    NULL, &limit),
           TWINHUB_ERR_TOO_LARGE);
    if (limit != sizeof frame_buf - TWINHUB_FRAME_OVERHEAD_MAX) {
        fprintf(stderr, "limit %u\n", (unsigned)limit);
        return 1;
    }
    EXPECT(twinhub_producer_enqueue(&producer, 0, payload, 8, (twinhub_class)3, NULL, NULL),
           TWINHUB_ERR_INVALID_ARGUMENT);
    EXPECT(twinhub_producer_enqueue(&producer, 0, NULL, 8, TWINHUB_CLASS_NORMAL, NULL, NULL),
           TWINHUB_ERR_NULL_POINTER);
    twinhub_record_key key;
    CHECK(twinhub_producer_enqueue(&producer, 0, payload, 8, TWINHUB_CLASS_NORMAL, &key, NULL));
    /* The enqueue asked the store whether the record fits; the callback's call into the
     * producer was refused. */
    EXPECT(reentrant_status, TWINHUB_ERR_BUSY);
    twinhub_transmit tx;
    /* A buffer too small for the pending record says how much it needs, and sends nothing. */
    uint8_t tiny[4];
    size_t needed = 0;
    EXPECT(twinhub_producer_poll_transmit(&producer, 0, tiny, sizeof tiny, &tx, &needed),
           TWINHUB_ERR_BUFFER_TOO_SMALL);
    if (needed <= sizeof tiny || needed > sizeof buf) {
        fprintf(stderr, "poll_transmit needs %zu\n", needed);
        return 1;
    }
    CHECK(twinhub_producer_poll_transmit(&producer, 0, buf, needed, &tx, NULL));
    if (tx.records != 1) {
        fprintf(stderr, "a buffer of the size needed sent %u records\n", (unsigned)tx.records);
        return 1;
    }
    CHECK(twinhub_producer_handle_outcome(&producer, 0, tx.id, TWINHUB_OUTCOME_UNREACHABLE, 0));
    EXPECT(twinhub_producer_poll_transmit(&producer, 0, buf, sizeof buf, NULL, NULL),
           TWINHUB_ERR_NULL_POINTER);
    EXPECT(twinhub_producer_handle_outcome(&producer, 0, tx.id, (twinhub_outcome)99, 0),
           TWINHUB_ERR_INVALID_ARGUMENT);
    EXPECT(twinhub_producer_handle_link(&producer, 0, 7, TWINHUB_LINK_DOWN), TWINHUB_ERR_NO_SUCH);

    char id[8];
    EXPECT(twinhub_producer_message_id(&producer, key, id, sizeof id, &need),
           TWINHUB_ERR_BUFFER_TOO_SMALL);
    if (need != strlen("sensor-0001:1:0") + 1 || id[sizeof id - 1] != 0) {
        fprintf(stderr, "message id needs %zu\n", need);
        return 1;
    }
    uint8_t small[4];
    size_t n = 0;
    EXPECT(twinhub_wire_hello("sensor-0001", small, sizeof small, &n),
           TWINHUB_ERR_BUFFER_TOO_SMALL);
    uint8_t big[64];
    CHECK(twinhub_wire_hello("sensor-0001", big, n, &n));
    CHECK(twinhub_producer_deinit(&producer));
    EXPECT(twinhub_producer_deinit(&producer), TWINHUB_ERR_NOT_INITIALIZED);
    if (strcmp(twinhub_result_name(12345), "TWINHUB_UNKNOWN") != 0) return 1;
    return 0;
}

struct answer {
    uint64_t at;
    uint32_t id;
    twinhub_outcome outcome;
};

int main(void) {
    if (misuse() != 0) return 1;

    twinhub_config cfg;
    uint8_t sat;
    CHECK(twinhub_config_init(&cfg, "sensor-0001"));
    CHECK(twinhub_config_add_endpoint(&cfg, "primary", NULL));
    CHECK(twinhub_config_add_endpoint(&cfg, "secondary", NULL));
    CHECK(twinhub_config_add_link(&cfg, "wan", TWINHUB_COST_FREE, NULL));
    CHECK(twinhub_config_add_link(&cfg, "cell", TWINHUB_COST_METERED, NULL));
    CHECK(twinhub_config_add_link(&cfg, "satellite", TWINHUB_COST_COSTLY, &sat));
    CHECK(twinhub_config_set_link_budget(&cfg, sat, 4 * 1024, 24ull * 3600 * 1000));
    CHECK(twinhub_config_set_link_arm_after(&cfg, sat, 10 * 60 * 1000));
    CHECK(twinhub_config_check(&cfg, NULL, 0, NULL));

    /* A fresh store: its next_epoch gives this first start epoch 1. */
    ram_store rs;
    twinhub_store table;
    ram_store_init(&rs, arena, sizeof arena, 0);
    ram_store_table(&rs, &table, frame_buf, sizeof frame_buf);
    CHECK(twinhub_producer_init(&producer, &cfg, &table, 0, 0, 2026));

    struct answer inflight[64];
    size_t n_inflight = 0;
    uint64_t delivered_over[3] = {0};
    for (uint64_t t = 0; t < 3 * 3600; t++) {
        uint64_t now = t * 1000;
        /* A reading every 30 s; every tenth is a critical alarm. */
        if (t % 30 == 0) {
            char reading[64];
            int len = snprintf(reading, sizeof reading, "{\"t\":%u,\"temp\":%.1f}",
                               (unsigned)t, 20.0 + (double)(t % 70) / 10.0);
            twinhub_class class = t % 300 == 0 ? TWINHUB_CLASS_CRITICAL : TWINHUB_CLASS_NORMAL;
            CHECK(twinhub_producer_enqueue(&producer, now, (const uint8_t *)reading, (size_t)len,
                                           class, NULL, NULL));
        }
        /* Answers arrive one second after sending. */
        size_t kept = 0;
        for (size_t i = 0; i < n_inflight; i++) {
            if (inflight[i].at <= t)
                CHECK(twinhub_producer_handle_outcome(&producer, now, inflight[i].id,
                                                      inflight[i].outcome, TWINHUB_NO_RETRY_AFTER));
            else
                inflight[kept++] = inflight[i];
        }
        n_inflight = kept;
        CHECK(twinhub_producer_handle_timeout(&producer, now));
        twinhub_transmit tx;
        twinhub_result r;
        while ((r = twinhub_producer_poll_transmit(&producer, now, buf, sizeof buf, &tx, NULL)) ==
               TWINHUB_OK) {
            twinhub_outcome outcome = world(t, &tx);
            if (outcome == TWINHUB_OUTCOME_DELIVERED) delivered_over[tx.link] += tx.records;
            /* Walk the records as a driver would before sending them. */
            size_t offset = 0, records = 0;
            twinhub_record rec;
            while (twinhub_transmit_record(buf, tx.len, &offset, &rec) == TWINHUB_OK) records++;
            if (records != tx.records) {
                fprintf(stderr, "transmit %u: %zu records read, %u said\n", (unsigned)tx.id,
                        records, (unsigned)tx.records);
                return 1;
            }
            if (n_inflight == sizeof inflight / sizeof inflight[0]) return 1;
            inflight[n_inflight++] = (struct answer){t + 1, tx.id, outcome};
        }
        EXPECT(r, TWINHUB_NONE);
        twinhub_event ev;
        while (twinhub_producer_poll_event(&producer, &ev) == TWINHUB_OK) print_event(t, &ev);
    }
    twinhub_stats s;
    CHECK(twinhub_producer_stats(&producer, &s));
    printf("\n");
    printf("accepted %llu  delivered %llu  pending %llu  dropped %llu\n",
           (unsigned long long)s.accepted, (unsigned long long)s.delivered,
           (unsigned long long)s.pending, (unsigned long long)s.dropped);
    printf("delivered over wan %llu, cell %llu, satellite %llu\n",
           (unsigned long long)delivered_over[0], (unsigned long long)delivered_over[1],
           (unsigned long long)delivered_over[2]);
    printf("satellite bytes %llu of a %d byte budget\n", (unsigned long long)s.link_bytes[2],
           4 * 1024);
    printf("failovers %u  failbacks %u  possible duplicates %llu\n", (unsigned)s.failovers,
           (unsigned)s.failbacks, (unsigned long long)s.possible_duplicates);
    if (s.accepted != s.delivered + s.pending + s.dropped) {
        fprintf(stderr, "records lost\n");
        return 1;
    }
    return 0;
}
