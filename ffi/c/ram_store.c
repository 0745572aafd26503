/* A twinhub store in a RAM arena: see ram_store.h. */
#include "ram_store.h"

#include <string.h>

/* What precedes each frame in the arena: the record's info, packed into 32 bytes. */
typedef struct slot {
    uint64_t seq;
    uint64_t enqueued_at_ms;
    uint32_t epoch;
    uint16_t frame_len;
    uint16_t payload_len;
    uint8_t record_class;
    uint8_t live;
} slot;

#define NO_SLOT SIZE_MAX

static size_t slot_len(size_t frame_len) {
    return (sizeof(slot) + frame_len + 7u) & ~(size_t)7u;
}

static slot *at(ram_store *s, size_t off) { return (slot *)(void *)(s->arena + off); }

static twinhub_record_key key_of(const slot *sl) {
    twinhub_record_key k = {sl->epoch, sl->seq};
    return k;
}

static size_t len_at(ram_store *s, size_t off) { return slot_len(at(s, off)->frame_len); }

static int key_cmp(twinhub_record_key a, twinhub_record_key b) {
    if (a.epoch != b.epoch) return a.epoch < b.epoch ? -1 : 1;
    if (a.seq != b.seq) return a.seq < b.seq ? -1 : 1;
    return 0;
}

/* Where a walk for keys above (or at) `key` may start: the cursor when it is not past it. */
static size_t start_for(ram_store *s, const twinhub_record_key *key) {
    if (key && s->cursor != NO_SLOT && key_cmp(key_of(at(s, s->cursor)), *key) <= 0)
        return s->cursor;
    return s->head;
}

/* The live slot holding `key`, or NO_SLOT. */
static size_t find(ram_store *s, twinhub_record_key key) {
    for (size_t off = start_for(s, &key); off < s->tail;
         off += len_at(s, off)) {
        int c = key_cmp(key_of(at(s, off)), key);
        if (c > 0) break;
        if (c == 0 && at(s, off)->live) {
            s->cursor = off;
            return off;
        }
    }
    return NO_SLOT;
}

static void compact(ram_store *s) {
    size_t write = 0;
    for (size_t read = s->head; read < s->tail;) {
        size_t len = len_at(s, read);
        if (at(s, read)->live) {
            memmove(s->arena + write, s->arena + read, len);
            write += len;
        }
        read += len;
    }
    s->head = 0;
    s->tail = write;
    s->cursor = NO_SLOT;
}

static twinhub_result rs_append(void *u, const twinhub_record_info *info, const uint8_t *frame) {
    ram_store *s = u;
    if (s->has_newest && key_cmp(info->key, s->newest) <= 0) return TWINHUB_ERR_OUT_OF_ORDER;
    size_t need = slot_len(info->frame_len);
    if (info->frame_len > UINT16_MAX || s->used + need > s->size) return TWINHUB_ERR_FULL;
    if (s->tail + need > s->size) compact(s);
    slot *sl = at(s, s->tail);
    sl->seq = info->key.seq;
    sl->enqueued_at_ms = info->enqueued_at_ms;
    sl->epoch = info->key.epoch;
    sl->frame_len = (uint16_t)info->frame_len;
    sl->payload_len = (uint16_t)info->payload_len;
    sl->record_class = (uint8_t)info->record_class;
    sl->live = 1;
    memcpy(sl + 1, frame, info->frame_len);
    s->tail += need;
    s->count++;
    s->used += need;
    s->newest = info->key;
    s->has_newest = 1;
    return TWINHUB_OK;
}

static twinhub_result rs_next_after(void *u, const twinhub_record_key *after,
                                    twinhub_record_info *out, bool *found) {
    ram_store *s = u;
    *found = false;
    for (size_t off = start_for(s, after); off < s->tail;
         off += len_at(s, off)) {
        slot *sl = at(s, off);
        if (sl->live && (!after || key_cmp(key_of(sl), *after) > 0)) {
            s->cursor = off;
            out->key = key_of(sl);
            out->enqueued_at_ms = sl->enqueued_at_ms;
            out->record_class = sl->record_class;
            out->payload_len = sl->payload_len;
            out->frame_len = sl->frame_len;
            *found = true;
            break;
        }
    }
    return TWINHUB_OK;
}

static twinhub_result rs_read(void *u, twinhub_record_key key, uint8_t *out, size_t out_len,
                              size_t *frame_len) {
    ram_store *s = u;
    size_t off = find(s, key);
    if (off == NO_SLOT) return TWINHUB_ERR_NO_SUCH;
    slot *sl = at(s, off);
    *frame_len = sl->frame_len;
    if (out_len < sl->frame_len) return TWINHUB_ERR_BUFFER_TOO_SMALL;
    memcpy(out, sl + 1, sl->frame_len);
    return TWINHUB_OK;
}

static twinhub_result rs_remove(void *u, twinhub_record_key key) {
    ram_store *s = u;
    size_t off = find(s, key);
    if (off == NO_SLOT) return TWINHUB_ERR_NO_SUCH;
    at(s, off)->live = 0;
    s->count--;
    s->used -= len_at(s, off);
    if (s->count == 0) {
        s->head = s->tail = 0;
        s->cursor = NO_SLOT;
        return TWINHUB_OK;
    }
    /* Holes at the front are reclaimed at once; a cursor on a hole stays usable until then. */
    while (s->head < s->tail && !at(s, s->head)->live)
        s->head += len_at(s, s->head);
    if (s->cursor != NO_SLOT && s->cursor < s->head) s->cursor = NO_SLOT;
    return TWINHUB_OK;
}

static size_t rs_len(void *u) { return ((ram_store *)u)->count; }
static size_t rs_capacity(void *u) { return ((ram_store *)u)->size; }
static size_t rs_cost(void *u, size_t frame_len) { (void)u; return slot_len(frame_len); }
static bool rs_fits(void *u, size_t frame_len) {
    ram_store *s = u;
    return s->used + slot_len(frame_len) <= s->size;
}

static twinhub_result rs_next_epoch(void *u, uint32_t *epoch) {
    ram_store *s = u;
    *epoch = ++s->epoch;
    return TWINHUB_OK;
}

void ram_store_init(ram_store *s, uint8_t *arena, size_t size, uint32_t epoch) {
    memset(s, 0, sizeof *s);
    s->arena = arena;
    s->size = size;
    s->cursor = NO_SLOT;
    s->epoch = epoch;
}

void ram_store_table(ram_store *s, twinhub_store *t, uint8_t *frame_buf, size_t frame_buf_len) {
    memset(t, 0, sizeof *t);
    t->userdata = s;
    t->frame_buf = frame_buf;
    t->frame_buf_len = frame_buf_len;
    t->append = rs_append;
    t->next_after = rs_next_after;
    t->read = rs_read;
    t->remove = rs_remove;
    t->len = rs_len;
    t->capacity = rs_capacity;
    t->cost = rs_cost;
    t->fits = rs_fits;
    t->next_epoch = rs_next_epoch;
    /* load_spend/save_spend stay NULL: RAM keeps no spend across a reboot. */
}
