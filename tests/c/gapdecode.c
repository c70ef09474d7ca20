/* Reference C99 decoder of the gap-coded layers ('golomb' = method 1 and
 * 'rice_rows' = method 2) of coding.py, written the way a microcontroller
 * would run it: decode as you go, one one at a time, O(ones + rows) work,
 * a few words of state, nothing allocated, byte loads only.
 *
 *   cc -std=c99 -O2 -o gapdecode gapdecode.c
 *   ./gapdecode layer.bin M K > bitmap.bin     (one byte 0/1 per weight)
 *
 * layer.bin = coding.to_bytes(enc): 16-byte header + stream (see REPORT.md).
 * Exit status 2 on a malformed stream (the C twin of Python's ValueError).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {                  /* bit reader: bit i = bit i%8 of byte i/8 */
    const uint8_t *buf;
    uint32_t pos, end;            /* next bit, one past the last bit */
} bitreader;

static int get_bit(bitreader *br, uint32_t *v)
{
    if (br->pos >= br->end) return -1;
    *v = (br->buf[br->pos >> 3] >> (br->pos & 7)) & 1u;
    br->pos++;
    return 0;
}

static int get_bits(bitreader *br, unsigned w, uint32_t *v)   /* w <= 32, LSB first */
{
    uint32_t x = 0, b;
    for (unsigned i = 0; i < w; i++) {
        if (get_bit(br, &b)) return -1;
        x |= b << i;
    }
    *v = x;
    return 0;
}

typedef struct {                  /* gap decoder state: a few words */
    bitreader gaps;               /* the payload */
    bitreader ktab;               /* rice_rows: table cursor for the row holding s */
    uint32_t s;                   /* coded position where the next gap starts */
    uint32_t s_row_end;           /* end of the coded row holding s (rice_rows) */
    uint32_t n, K;                /* coded positions (kept rows * K), row length */
    uint32_t m, b, t;             /* divisor, ceil(log2 m), 2^b - m */
    uint32_t k_min, width, skip, per_row;
} gapdec;

static void set_divisor(gapdec *d, uint32_t m)
{
    uint32_t b = 0;
    while (b < 32 && (1ull << b) < m) b++;
    d->m = m; d->b = b; d->t = (uint32_t)((1ull << b) - m);
}

/* k of the next kept row in table cursor tab (skip mode passes over the empty marks). */
static int next_kept_k(const gapdec *d, bitreader *tab, uint32_t *k)
{
    uint32_t v;
    do {
        if (get_bits(tab, d->width, &v)) return -1;
    } while (d->skip && v == 0);
    *k = d->k_min + v - d->skip;
    return *k <= 20 ? 0 : -1;
}

/* Next one as a coded position, or UINT32_MAX at the end of the stream; -1 on error. */
static int next_one(gapdec *d, uint32_t *x)
{
    uint32_t q = 0, r = 0, bit, k, q_max;
    if (d->gaps.pos >= d->gaps.end) { *x = UINT32_MAX; return 0; }
    if (d->s >= d->n) return -1;                      /* bits left after position N */
    while (d->per_row && d->s >= d->s_row_end) {      /* divisor of the row holding s */
        if (next_kept_k(d, &d->ktab, &k)) return -1;
        set_divisor(d, 1u << k);
        d->s_row_end += d->K;
    }
    q_max = (d->n - d->s - 1) / d->m;                 /* a larger q puts the one past N */
    for (;;) {                                        /* unary: q zeros, then a one */
        if (get_bit(&d->gaps, &bit)) return -1;
        if (bit) break;
        if (++q > q_max) return -1;
    }
    if (d->b > 0) {                                   /* truncated binary remainder */
        if (get_bits(&d->gaps, d->b - 1, &r)) return -1;
        if (r >= d->t) {
            if (get_bit(&d->gaps, &bit)) return -1;
            if (bit) r += (1u << (d->b - 1)) - d->t;
        }
    }
    if ((uint64_t)d->s + (uint64_t)q * d->m + r >= d->n) return -1;
    *x = d->s + q * d->m + r;
    d->s = *x + 1;
    return 0;
}

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static uint16_t crc16(uint16_t c, const uint8_t *p, size_t n)   /* CRC-16/CCITT, start 0xFFFF */
{
    while (n--) {
        c ^= (uint16_t)(*p++ << 8);
        for (int i = 0; i < 8; i++) c = (uint16_t)(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
    }
    return c;
}

static int fail(const char *why) { fprintf(stderr, "corrupt layer: %s\n", why); return 2; }

int main(int argc, char **argv)
{
    static uint8_t buf[1 << 24], row[1 << 20];
    if (argc != 4) { fprintf(stderr, "usage: %s layer.bin M K\n", argv[0]); return 1; }
    uint32_t M = (uint32_t)strtoul(argv[2], 0, 10), K = (uint32_t)strtoul(argv[3], 0, 10);
    FILE *f = fopen(argv[1], "rb");
    size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (len < 16 || K > sizeof row) return fail("short header");
    uint32_t method = buf[0] & 15, comp = buf[0] >> 4 & 1, p8 = buf[1], p32 = le32(buf + 2);
    uint32_t n_bits = le32(buf + 10);
    if (len != 16 + (n_bits + 7) / 8) return fail("length");
    if (crc16(crc16(0xFFFF, buf, 14), buf + 16, len - 16) != (buf[14] | buf[15] << 8)) return fail("CRC");

    gapdec d = {0};
    bitreader rtab = {buf + 16, 0, 0};                /* table cursor for the output rows */
    d.K = K;
    d.gaps = (bitreader){buf + 16, 0, n_bits};
    uint32_t kept = M, v;
    if (method == 1) {
        if (p32 < 1) return fail("m");
        set_divisor(&d, p32);
    } else if (method == 2) {
        d.per_row = 1; d.k_min = p8 & 31; d.skip = p8 >> 7; d.width = p32;
        if (d.width > 5 || M * d.width > n_bits) return fail("table");
        d.gaps.pos = M * d.width;                     /* the payload follows the table */
        d.ktab = rtab = (bitreader){buf + 16, 0, M * d.width};
        for (uint32_t r = 0; r < M && d.skip; r++) { get_bits(&rtab, d.width, &v); kept -= v == 0; }
        rtab.pos = 0;
    } else {
        return fail("not a gap-coded method");
    }
    d.n = kept * K;

    /* Decode as you go: rows in order, the ones of each row in order. An
     * inference kernel would add x[col] where this sets row[col]. */
    uint32_t x, coded_row = 0;
    if (next_one(&d, &x)) return fail("stream");
    for (uint32_t r = 0; r < M; r++) {
        int empty = 0;
        if (d.per_row) {
            get_bits(&rtab, d.width, &v);
            empty = d.skip && v == 0;
        }
        for (uint32_t c = 0; c < K; c++) row[c] = 0;
        if (!empty) {
            uint32_t base = coded_row++ * K;
            while (x != UINT32_MAX && x < base + K) {
                row[x - base] = 1;
                if (next_one(&d, &x)) return fail("stream");
            }
        }
        for (uint32_t c = 0; c < K; c++) putchar(comp ? !row[c] : row[c]);
    }
    return x == UINT32_MAX ? 0 : fail("ones past the last row");
}
