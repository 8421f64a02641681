/* unicode: see unicode.h. The class table is a sorted list of range starts
 * (about 2,200), searched by bisection; ASCII letters and digits take a
 * fast path because they are most of any text. */
#include "unicode.h"

/* Allowed range of the second byte after a lead byte, per RFC 3629 table:
 * this is what excludes overlong forms, surrogates and values > U+10FFFF. */
static int utf8_second_ok(unsigned char lead, unsigned char b)
{
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
    }
}

/* Sequence length announced by a lead byte; 0 if it cannot start one. */
static size_t utf8_seq_len(unsigned char lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

uint32_t unicode_decode(const unsigned char *s, size_t n, size_t *len)
{
    unsigned char c = s[0];
    size_t want = utf8_seq_len(c);
    *len = 1;
    if (want == 1) return c;
    if (want == 0 || n < want || !utf8_second_ok(c, s[1])) return UNICODE_INVALID;
    for (size_t i = 2; i < want; i++)
        if ((s[i] & 0xC0) != 0x80) return UNICODE_INVALID;
    uint32_t cp;
    if (want == 2) {
        cp = (uint32_t)(c & 0x1F) << 6 | (uint32_t)(s[1] & 0x3F);
    } else if (want == 3) {
        cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (uint32_t)(s[2] & 0x3F);
    } else {
        cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
             (uint32_t)(s[2] & 0x3F) << 6 | (uint32_t)(s[3] & 0x3F);
    }
    *len = want;
    return cp;
}

size_t unicode_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > 0x10FFFF) return 0;
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t unicode_complete_prefix(const unsigned char *s, size_t n)
{
    /* A partial sequence is at most 3 bytes: look back for its lead byte. */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        size_t i = n - back;
        unsigned char c = s[i];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking */
        size_t want = utf8_seq_len(c);
        if (want <= back) return n; /* complete, ASCII or invalid lead */
        if (back >= 2 && !utf8_second_ok(c, s[i + 1])) return n;
        return i; /* valid prefix of an unfinished character */
    }
    return n;
}

size_t unicode_sanitize(const unsigned char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len;
        if (unicode_decode(s + i, n - i, &len) != UNICODE_INVALID) {
            for (size_t k = 0; k < len; k++) out[o++] = (char)s[i + k];
            i += len;
            continue;
        }
        /* maximal subpart (Unicode 15, 3.9): a valid lead byte and the valid
         * bytes after it that still fit its sequence form one error */
        size_t want = utf8_seq_len(s[i]), bad = 1;
        if (want >= 2 && i + 1 < n && utf8_second_ok(s[i], s[i + 1])) {
            bad = 2;
            while (bad < want - 1 && i + bad < n && (s[i + bad] & 0xC0) == 0x80) bad++;
        }
        out[o++] = (char)0xEF;
        out[o++] = (char)0xBF;
        out[o++] = (char)0xBD;
        i += bad;
    }
    return o;
}

enum unicode_class unicode_class(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return UNICODE_LETTER;
        if (cp >= '0' && cp <= '9') return UNICODE_NUMBER;
    }
    if (cp > 0x10FFFF) return UNICODE_OTHER;
    size_t lo = 0, hi = unicode_n_ranges; /* invariant: start[lo] <= cp < start[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (unicode_range_start[mid] <= cp) lo = mid;
        else hi = mid;
    }
    return (enum unicode_class)unicode_range_class[lo];
}

int unicode_is_letter(uint32_t cp) { return unicode_class(cp) == UNICODE_LETTER; }
int unicode_is_number(uint32_t cp) { return unicode_class(cp) == UNICODE_NUMBER; }

int unicode_is_space(uint32_t cp)
{
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    for (size_t i = 0; i < unicode_n_space_ranges; i++)
        if (cp >= unicode_space_ranges[i][0] && cp <= unicode_space_ranges[i][1]) return 1;
    return 0;
}

int unicode_is_py_space(uint32_t cp) { return unicode_is_space(cp) || (cp >= 0x1C && cp <= 0x1F); }

uint32_t unicode_fold_ascii(uint32_t cp)
{
    if (cp >= 'A' && cp <= 'Z') return cp + 32;
    if (cp == 0x17F) return 's';
    if (cp == 0x212A) return 'k';
    return cp;
}

/* GPT-2's bytes_to_unicode(): printable bytes '!'..'~', 0xA1..0xAC and
 * 0xAE..0xFF map to themselves; the other 68 bytes, in increasing order,
 * to U+0100, U+0101, ... */
static int byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t unicode_byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    uint32_t k = 0; /* number of non-printable bytes below b */
    for (unsigned i = 0; i < b; i++) k += !byte_is_printable(i);
    return 0x100 + k;
}

int unicode_cp_to_byte(uint32_t cp)
{
    if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (unsigned i = 0; i < 256; i++)
        if (!byte_is_printable(i) && k-- == 0) return (int)i;
    return -1;
}
