/* The inference kernels of an exported SBNN (pysbnn.export.c).
 *
 * This file is a template: the exporter copies the sections a model needs
 * into <name>.c, in this order (a section line names the sections it needs).
 * Everything is static; integers only, except affine_logits.
 *
 * Bits travel between layers as uint32_t words: bit k of a layer's input is
 * bit k % 32 of word k / 32, and the bits past the last input are 0.
 */
/* @@ popcount */
/* Ones of a 32-bit word. __builtin_popcount only where the target has an
 * instruction for it: without one GCC calls a libgcc routine, slower than
 * these five lines (measured, docs/mcu.md). */
static uint32_t popcount32(uint32_t x)
{
#if (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__POPCNT__) || defined(__ARM_FEATURE_SVE) || defined(SBNN_BUILTIN_POPCOUNT))
    return (uint32_t)__builtin_popcount(x);
#else
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0Fu;
    return (x * 0x01010101u) >> 24;
#endif
}

/* @@ ctz */
/* Index of the lowest set bit of x != 0 (x86: bsf/tzcnt, Cortex-M: rbit + clz). */
static uint32_t ctz32(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return (uint32_t)__builtin_ctzl((unsigned long)x);
#else
    static const uint8_t debruijn[32] = {
        0, 1, 28, 2, 29, 14, 24, 3, 30, 22, 20, 15, 25, 17, 4, 8,
        31, 27, 13, 23, 21, 19, 16, 7, 26, 12, 18, 6, 11, 5, 10, 9};
    return debruijn[((x & (0u - x)) * 0x077CB531u) >> 27];
#endif
}

/* @@ window */
/* 32 bits of a little-endian bit stream from bit `pos` on: bit i of the
 * stream is bit i % 8 of byte i / 8. At least 25 of them are stream bits,
 * the top (pos % 8) are zero. The exporter appends 4 zero bytes to every
 * stream, so the window never reads past its table. */
static uint32_t window32(const uint8_t *s, uint32_t pos)
{
    const uint8_t *p = s + (pos >> 3);
    uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    return w >> (pos & 7u);
}

/* @@ gaps: ctz window */
/* A gap-coded layer: the stream of pysbnn.coding's method golomb (1) or
 * rice_rows (2), byte for byte (docs/format.md), read as it is used: no
 * bitmap is ever built and the work is proportional to the ones.
 *
 * The layer's M rows of K weights, flattened row-major, are the coded
 * positions; a one at position x is the gap g = x - s since the previous
 * one (s: where the gap starts), written as q = g / m in unary (q zeros
 * and a one) and r = g % m in truncated binary (b = ceil(log2 m) bits,
 * t = 2^b - m: r < t in b - 1 bits, else r + t in b bits). golomb has one
 * m; rice_rows starts with a table of M fields of `width` bits and the gap
 * starting at s uses m = 2^k of the row holding s, k = k_min + field (with
 * skip: field 0 marks an empty row, left out of the coded positions, and
 * k = k_min + field - 1). With `complement` the stream codes 1 - w. */
typedef struct {
    uint32_t rows, K;           /* M outputs of K inputs */
    uint32_t n_ones;            /* ones of the coded array */
    uint8_t method;             /* 1 golomb, 2 rice_rows */
    uint8_t complement;         /* the stream codes 1 - w */
    uint8_t width, k_min, skip; /* rice_rows table */
    uint32_t m, b, t, h;        /* golomb: m, ceil(log2 m), 2^b - m, 2^(b-1) */
} sbnn_gap_code;

typedef struct {
    const uint8_t *s;           /* the stream */
    uint32_t pos;               /* next bit of the gap codewords */
    uint32_t start;             /* coded position where the next gap starts */
    uint32_t m, b, t, h;        /* the divisor of the row holding start */
    uint32_t m_end;             /* end of that row (golomb: never) */
    uint32_t tab;               /* rice_rows: table field of the next kept row */
} sbnn_gap_reader;

/* Field i of a rice_rows table (width <= 5). */
static uint32_t table_field(const uint8_t *s, uint32_t i, uint32_t width)
{
    return window32(s, i * width) & ((1u << width) - 1u);
}

/* The next row r' >= r that has coded ones (rice_rows with skip: field != 0). */
static uint32_t kept_row(const uint8_t *s, const sbnn_gap_code *c, uint32_t r)
{
    while (c->skip && r < c->rows && table_field(s, r, c->width) == 0u) {
        r++;
    }
    return r;
}

/* rice_rows: m = 2^k of the next kept coded row (the one holding start). */
static void gap_next_row(sbnn_gap_reader *g, const sbnn_gap_code *c)
{
    uint32_t v;
    do {
        v = table_field(g->s, g->tab++, c->width);
    } while (c->skip && v == 0u);
    g->b = c->k_min + v - c->skip;
    g->m = 1u << g->b;
    g->t = 0u;
    g->h = g->b ? 1u << (g->b - 1u) : 0u;
    g->m_end += c->K;
}

/* Coded position of the next one (the caller counts the ones). */
static uint32_t gap_next(sbnn_gap_reader *g, const sbnn_gap_code *c)
{
    uint32_t q = 0u, r = 0u, w, z;
    while (g->start >= g->m_end) {
        gap_next_row(g, c);
    }
    while ((w = window32(g->s, g->pos)) == 0u) { /* a long run of zeros */
        z = 32u - (g->pos & 7u);
        q += z;
        g->pos += z;
    }
    z = ctz32(w);                                /* q: zeros before the one */
    q += z;
    g->pos += z + 1u;
    if (g->b != 0u) {                            /* r: truncated binary */
        w = window32(g->s, g->pos);
        r = w & (g->h - 1u);
        if (r < g->t) {
            g->pos += g->b - 1u;
        } else {
            r += ((w >> (g->b - 1u)) & 1u) * (g->h - g->t);
            g->pos += g->b;
        }
    }
    z = g->start + q * g->m + r;
    g->start = z + 1u;
    return z;
}

/* z' of every row of a gap-coded layer, from uint8 pixels (bits == 0):
 *     z'_r = sum of the pixels x_k under the ones k of row r,
 * or from input bits (pixels == 0):
 *     z'_r = sum over the ones k of row r of (2 b_k - 1)
 *          = 2 (ones with the input bit set) - (ones of row r).
 * q is the layer's 1 . x (Q, or 2 ones - K): with a complemented stream
 * the ones are the zeros of w and z'_r = q - (the sum over them). */
static void gaps_z(const uint8_t *s, const sbnn_gap_code *c, const uint8_t *pixels,
                   const uint32_t *bits, int32_t q, int32_t *z)
{
    sbnn_gap_reader g;
    uint32_t i, row, base = 0u, end = c->K;
    int32_t acc = 0;
    g.s = s;
    g.pos = c->method == 2u ? c->rows * c->width : 0u;
    g.start = g.tab = 0u;
    g.m = c->m;
    g.b = c->b;
    g.t = c->t;
    g.h = c->h;
    g.m_end = c->method == 2u ? 0u : 0xFFFFFFFFu;
    memset(z, 0, c->rows * sizeof *z);
    row = kept_row(s, c, 0u);
    for (i = 0u; i < c->n_ones; i++) {
        uint32_t k = gap_next(&g, c);
        while (k >= end) {                       /* the one is in a later row */
            z[row] = acc;
            acc = 0;
            row = kept_row(s, c, row + 1u);
            base = end;
            end += c->K;
        }
        k -= base;
        acc += pixels ? (int32_t)pixels[k] : 2 * (int32_t)((bits[k >> 5] >> (k & 31u)) & 1u) - 1;
    }
    if (row < c->rows) {
        z[row] = acc;
    }
    if (c->complement) {
        for (row = 0u; row < c->rows; row++) {
            z[row] = q - z[row];
        }
    }
}

/* @@ bitmap_raw: ctz */
/* z'[r] = sum of the pixels under the ones of row r; w: rows of
 * ceil(K / 32) words, bit k of a row at bit k % 32 of its word k / 32. */
static void bitmap_raw(const uint32_t *w, uint32_t rows, uint32_t K, const uint8_t *x,
                       int32_t *z)
{
    uint32_t r, j, n_words = (K + 31u) / 32u;
    for (r = 0u; r < rows; r++) {
        uint32_t acc = 0u;
        for (j = 0u; j < n_words; j++) {
            const uint8_t *xj = x + 32u * j;
            uint32_t bits = *w++;
            for (; bits != 0u; bits &= bits - 1u) {
                acc += xj[ctz32(bits)];
            }
        }
        z[r] = (int32_t)acc;
    }
}

/* @@ bitmap_bits: popcount */
/* z'[r] = 2 popcount(w_r & x) - popcount(w_r), rows as in bitmap_raw. */
static void bitmap_bits(const uint32_t *w, uint32_t rows, uint32_t K, const uint32_t *x,
                        int32_t *z)
{
    uint32_t r, j, n_words = (K + 31u) / 32u;
    for (r = 0u; r < rows; r++) {
        uint32_t hit = 0u, n = 0u;
        for (j = 0u; j < n_words; j++) {
            uint32_t bits = *w++;
            hit += popcount32(bits & x[j]);
            n += popcount32(bits);
        }
        z[r] = 2 * (int32_t)hit - (int32_t)n;
    }
}

/* @@ threshold */
/* BatchNorm + sign of a binary layer as an integer test
 * (pysbnn.kernels.threshold): with t = round(XI q / 2^(G - F)),
 *     u_F = z' 2^F + t,    bit m = dir_m u_F >= T_m.                       */
typedef struct {
    int32_t F, G; /* fractional bits of u_F and of XI */
    int64_t XI;   /* round(xi 2^G) */
} sbnn_fixed;

/* round(v / 2^s), halves up, for s > 0 (v 2^-s otherwise). C leaves >> of a
 * negative value to the implementation, so the floor is written out. */
static int64_t round_shift(int64_t v, int32_t s)
{
    if (s <= 0) {
        return v * ((int64_t)1 << -s);
    }
    v += (int64_t)1 << (s - 1);
    return v >= 0 ? v >> s : -((-v - 1) >> s) - 1;
}

/* The bits of rows outputs into out (ceil(rows / 32) words); returns their ones. */
static uint32_t threshold_bits(const int32_t *z, uint32_t rows, int32_t q, const int32_t *T,
                               const int8_t *dir, const sbnn_fixed *f, uint32_t *out)
{
    int64_t t = round_shift(f->XI * (int64_t)q, f->G - f->F), u;
    uint32_t m, ones = 0u;
    int bit;
    memset(out, 0, ((rows + 31u) / 32u) * sizeof *out);
    for (m = 0u; m < rows; m++) {
        u = (int64_t)z[m] * ((int64_t)1 << f->F) + t;
        bit = dir[m] > 0 ? u >= T[m] : dir[m] < 0 ? -u >= T[m] : 0 >= T[m];
        if (bit) {
            out[m >> 5] |= 1u << (m & 31u);
            ones++;
        }
    }
    return ones;
}

/* @@ affine */
/* The logits, Eq. 20 with the folded BatchNorm: A (z' + xi q) + C, written
 * A z' + B q + C with B = A xi; the only floating point of the model. */
static void affine_logits(const int32_t *z, uint32_t rows, int32_t q, const float *A,
                          const float *B, const float *C, float *logits)
{
    uint32_t m;
    for (m = 0u; m < rows; m++) {
        logits[m] = A[m] * (float)z[m] + B[m] * (float)q + C[m];
    }
}
