/* One pass over a well-formed Memento response (UTF-8): pair spans in characters, and word counts as
 * Python's str.split() counts them. Built by mementokit.analysis.cscan with the system C compiler; any
 * response that is not in the canonical layout returns -1 and goes through the Python parser.
 *
 *   prefix <think> text (<|block_start|> block <|block_end|> sep <|summary_start|> memento <|summary_end|> sep)*
 *   </think> answer,   block and memento not blank.
 */
#include <stddef.h>
#include <string.h>

/* Bytes of the whitespace character starting at s (str.isspace()), or 0. */
static int space_len(const unsigned char *s, const unsigned char *end) {
    unsigned char c = s[0];
    if (c < 0x80) return (c == 32 || (c >= 9 && c <= 13) || (c >= 28 && c <= 31)) ? 1 : 0;
    if (c == 0xC2 && s + 1 < end) return (s[1] == 0x85 || s[1] == 0xA0) ? 2 : 0;
    if (c == 0xE1 && s + 2 < end) return (s[1] == 0x9A && s[2] == 0x80) ? 3 : 0;
    if (c == 0xE2 && s + 2 < end) {
        if (s[1] == 0x80) return (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF) && s[2] >= 0x80 ? 3 : 0;
        if (s[1] == 0x81) return s[2] == 0x9F ? 3 : 0;
        return 0;
    }
    if (c == 0xE3 && s + 2 < end) return (s[1] == 0x80 && s[2] == 0x80) ? 3 : 0;
    return 0;
}

/* Byte classes: 0 a byte inside a word (or a continuation byte), 1 ASCII whitespace, 2 the lead byte of a
 * character that may be whitespace (U+0085 U+00A0, U+1680, U+2000-U+200A U+2028 U+2029 U+202F U+205F, U+3000). */
static unsigned char byte_class[256];

static void init_classes(void) {
    static int done = 0;
    if (done) return;
    for (int c = 9; c <= 13; c++) byte_class[c] = 1;
    for (int c = 28; c <= 32; c++) byte_class[c] = 1;
    byte_class[0xC2] = byte_class[0xE1] = byte_class[0xE2] = byte_class[0xE3] = 2;
    done = 1;
}

/* Words in [a, b) as str.split() counts them; *chars gets the characters in it. Branch-free except at the
 * lead bytes of the few non-ASCII whitespace characters. */
static long words(const unsigned char *a, const unsigned char *b, long *chars) {
    long n = 0, count = 0;
    int in_word = 0;
    while (a < b) {
        unsigned char c = *a;
        int k = byte_class[c];
        if (__builtin_expect(k == 2, 0)) {
            int w = space_len(a, b);
            if (w) {
                in_word = 0;
                a += w;
            } else {
                count += !in_word;
                in_word = 1;
                a++;
            }
            n++;
            continue;
        }
        int word = k == 0;
        count += word & !in_word;
        in_word = word;
        n += (c & 0xC0) != 0x80;
        a++;
    }
    *chars = n;
    return count;
}

static long chars_in(const unsigned char *a, const unsigned char *b) {
    long n = 0;
    for (; a < b; a++) n += (*a & 0xC0) != 0x80;
    return n;
}

/* markers: 6 strings in the order T U B E S F (think start/end, block start/end, summary start/end), tried at each
 * position in `order` (longest first, as the regex alternation is). out: [chars, answer start, answer end,
 * answer words, then per pair: block start, end, memento start, end (characters), block words, memento words].
 * Returns the number of pairs, -1 when the response is not canonical, -2 when out is too small. */
long memento_scan(const unsigned char *s, long n, const unsigned char *const *markers, const long *lens,
                  const int *order, long *out, long cap) {
    const unsigned char *end = s + n, *p = s, *text = s;
    long pos_chars = 0; /* characters before `text` */
    long expect = 0;    /* 0: T, 1: B or U, 2: E, 3: S, 4: F, 5: done (after U) */
    long pairs = 0, block_a = 0, block_b = 0, block_words = 0, chars = 0;
    unsigned char first[256];
    int common = markers[0][0]; /* the first byte every marker starts with, or -1 */
    init_classes();
    memset(first, 0, sizeof first);
    for (int i = 0; i < 6; i++) {
        first[markers[i][0]] = 1;
        if (markers[i][0] != common) common = -1;
    }
    if (cap < 4) return -2;
    while (p < end) {
        if (common >= 0) {
            const unsigned char *next = memchr(p, common, (size_t)(end - p));
            if (next == NULL) break;
            p = next;
        } else if (!first[*p]) {
            p++;
            continue;
        }
        int which = -1;
        for (int k = 0; k < 6; k++) {
            int m = order[k];
            if (end - p >= lens[m] && memcmp(p, markers[m], (size_t)lens[m]) == 0) {
                which = m;
                break;
            }
        }
        if (which < 0) {
            p++;
            continue;
        }
        /* the text piece [text, p) ends here */
        long piece_chars = 0, piece_words = 0;
        if (expect == 2 || expect == 4) {
            piece_words = words(text, p, &piece_chars);
            if (piece_words == 0) return -1; /* a blank block or memento */
        } else {
            piece_chars = chars_in(text, p);
        }
        long piece_start = pos_chars;
        pos_chars += piece_chars;
        switch (expect) {
            case 0: if (which != 0) return -1; expect = 1; break;
            case 1:
                if (which == 2) expect = 2;
                else if (which == 1) expect = 5;
                else return -1;
                break;
            case 2:
                if (which != 3) return -1;
                block_a = piece_start; block_b = pos_chars; block_words = piece_words; expect = 3;
                break;
            case 3: if (which != 4) return -1; expect = 4; break;
            case 4:
                if (which != 5) return -1;
                if (4 + 6 * (pairs + 1) > cap) return -2;
                {
                    long *o = out + 4 + 6 * pairs;
                    o[0] = block_a; o[1] = block_b; o[2] = piece_start; o[3] = pos_chars;
                    o[4] = block_words; o[5] = piece_words;
                }
                pairs++;
                expect = 1;
                break;
            default: return -1; /* a marker after </think> */
        }
        /* the marker itself (ASCII or not, count its characters) */
        pos_chars += chars_in(p, p + lens[which]);
        p += lens[which];
        text = p;
    }
    if (expect != 5) return -1;
    long answer_chars = 0;
    long answer_words = words(text, end, &answer_chars);
    chars = pos_chars + answer_chars;
    out[0] = chars; out[1] = pos_chars; out[2] = chars; out[3] = answer_words;
    return pairs;
}
