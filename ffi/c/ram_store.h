/*
 * A twinhub store in a RAM arena, written against the callback table (twinhub_store) the
 * way a firmware team writes one over its own flash. Records are kept in key order as
 * [header][frame] slots; removing the oldest frees its room at once, removing another
 * leaves a hole that compaction reclaims when an append needs the room. Each record takes
 * a 32-byte header plus its frame, rounded up to 8 bytes. Look-ups go on
 * from the slot looked up last, so the engine's oldest-to-newest walks cost one step each.
 *
 * It keeps nothing across a reboot; its next_epoch counts starts in RAM only (a device
 * keeps that counter in flash), so give it the device's stored epoch at init.
 */
#ifndef TWINHUB_RAM_STORE_H
#define TWINHUB_RAM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "twinhub.h"

typedef struct ram_store {
    uint8_t *arena;     /* 8-byte aligned */
    size_t size;
    size_t head, tail;  /* slots live in [head, tail) */
    size_t count;       /* live records */
    size_t used;        /* bytes live slots take */
    size_t cursor;      /* slot looked up last, or SIZE_MAX */
    twinhub_record_key newest;
    int has_newest;
    uint32_t epoch;     /* the epoch taken last */
} ram_store;

/* Starts an empty store over `arena` (`size` bytes, 8-byte aligned); `epoch` is the last
 * epoch this device used (0 on first boot). */
void ram_store_init(ram_store *s, uint8_t *arena, size_t size, uint32_t epoch);

/* Fills the callback table for `s`, with `frame_buf` as the producer's staging buffer. */
void ram_store_table(ram_store *s, twinhub_store *table, uint8_t *frame_buf, size_t frame_buf_len);

#endif
