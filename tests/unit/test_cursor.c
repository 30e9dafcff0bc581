/*
 * test_cursor.c - cursors round-trip, are parsed strictly, and epochs never repeat.
 */
#include "../../src/cursor.c"

#include "ctest.h"

/* Parses a NUL-terminated candidate cursor. */
static int parse(const char *s, uint64_t *epoch, uint64_t *seq)
{
    return cs_cursor_parse(s, strlen(s), epoch, seq);
}

static void test_format(void)
{
    char buf[CS_CURSOR_MAX];
    size_t n;

    n = cs_cursor_format(buf, sizeof(buf), 0x0f3a9c2b7d41ull, 42);
    CHECK_STR(buf, "0f3a9c2b7d41-42");
    CHECK(n == strlen(buf));
    n = cs_cursor_format(buf, sizeof(buf), 1, 1);
    CHECK_STR(buf, "000000000001-1");
    CHECK(n == 14);
    /* Bits above 48 are not part of an epoch. */
    cs_cursor_format(buf, sizeof(buf), 0xabcd000000000005ull, 0);
    CHECK_STR(buf, "000000000005-0");
    /* The longest cursor fits CS_CURSOR_MAX. */
    n = cs_cursor_format(buf, sizeof(buf), CS_EPOCH_MASK, UINT64_MAX);
    CHECK_STR(buf, "ffffffffffff-18446744073709551615");
    CHECK(n == 33 && n < CS_CURSOR_MAX);
    /* A short buffer gets a terminated prefix and its true length. */
    n = cs_cursor_format(buf, 5, 1, 1);
    CHECK_STR(buf, "0000");
    CHECK(n == 4);
    CHECK(cs_cursor_format(buf, 0, 1, 1) == 0);
}

static void test_round_trip(void)
{
    const uint64_t epochs[] = {1, 0x123456789abcull, CS_EPOCH_MASK, 0x800000000000ull};
    const uint64_t seqs[] = {0, 1, 9, 10, 1024, 4294967296ull, UINT64_MAX - 1, UINT64_MAX};

    for (size_t i = 0; i < sizeof(epochs) / sizeof(epochs[0]); i++) {
        for (size_t j = 0; j < sizeof(seqs) / sizeof(seqs[0]); j++) {
            char buf[CS_CURSOR_MAX];
            uint64_t e = 0, s = 0;
            size_t n = cs_cursor_format(buf, sizeof(buf), epochs[i], seqs[j]);
            CHECK(cs_cursor_parse(buf, n, &e, &s) == 0);
            CHECK(e == epochs[i]);
            CHECK(s == seqs[j]);
        }
    }
}

static void test_strict(void)
{
    uint64_t e = 7, s = 7;

    CHECK(parse("0f3a9c2b7d41-42", &e, &s) == 0);
    CHECK(e == 0x0f3a9c2b7d41ull && s == 42);
    CHECK(parse("000000000000-0", &e, &s) == 0);    /* the store decides what 0 means */
    CHECK(parse("0f3a9c2b7d41-0042", &e, &s) == 0); /* leading zeros in the seq are fine */
    CHECK(s == 42);
    CHECK(parse("0f3a9c2b7d41-18446744073709551615", &e, &s) == 0);
    CHECK(s == UINT64_MAX);

    e = s = 7;
    CHECK(parse("0F3A9C2B7D41-42", &e, &s) == -EINVAL); /* upper case */
    CHECK(parse("0f3a9c2b7d4F-42", &e, &s) == -EINVAL);
    CHECK(parse("f3a9c2b7d41-42", &e, &s) == -EINVAL);   /* 11 digits */
    CHECK(parse("00f3a9c2b7d41-42", &e, &s) == -EINVAL); /* 13 digits */
    CHECK(parse("0f3a9c2b7d4142", &e, &s) == -EINVAL);   /* no dash */
    CHECK(parse("0f3a9c2b7d41_42", &e, &s) == -EINVAL);
    CHECK(parse("0f3a9c2b7d41-", &e, &s) == -EINVAL); /* empty seq */
    CHECK(parse("0f3a9c2b7d41", &e, &s) == -EINVAL);
    CHECK(parse("", &e, &s) == -EINVAL);
    CHECK(parse("-42", &e, &s) == -EINVAL);
    CHECK(parse("0f3a9c2b7d41-+42", &e, &s) == -EINVAL);
    CHECK(parse("0f3a9c2b7d41--42", &e, &s) == -EINVAL);
    CHECK(parse("0f3a9c2b7d41- 42", &e, &s) == -EINVAL);
    CHECK(parse("0f3a9c2b7d41-42 ", &e, &s) == -EINVAL);
    CHECK(parse(" 0f3a9c2b7d41-42", &e, &s) == -EINVAL);
    CHECK(parse("0f3a9c2b7d41-42-1", &e, &s) == -EINVAL);
    CHECK(parse("0x3a9c2b7d41-42", &e, &s) == -EINVAL);
    CHECK(parse("0g3a9c2b7d41-42", &e, &s) == -EINVAL);
    CHECK(parse("0f3a9c2b7d41-99999999999999999999999", &e, &s) == -EINVAL); /* overflow */
    CHECK(parse("0f3a9c2b7d41-18446744073709551616", &e, &s) == -EINVAL);    /* UINT64_MAX + 1 */
    CHECK(parse("0f3a9c2b7d41-000000000000000000001", &e, &s) == -EINVAL);   /* 21 digits */
    /* A failed parse leaves the outputs alone. */
    CHECK(e == 7 && s == 7);
    /* The length is honoured: a NUL inside, or bytes past it, are not read as part of the cursor. */
    CHECK(cs_cursor_parse("0f3a9c2b7d41-4\0002", 16, &e, &s) == -EINVAL);
    CHECK(cs_cursor_parse("0f3a9c2b7d41-42xyz", 15, &e, &s) == 0);
    CHECK(s == 42);
    CHECK(cs_cursor_parse(NULL, 0, &e, &s) == -EINVAL);
}

static void test_seq_parse(void)
{
    uint64_t s = 5;

#define SEQ(str) cs_seq_parse(str, sizeof(str) - 1, &s)
    CHECK(SEQ("0") == 0 && s == 0);
    CHECK(SEQ("1") == 0 && s == 1);
    CHECK(SEQ("000123") == 0 && s == 123);
    CHECK(SEQ("18446744073709551615") == 0 && s == UINT64_MAX);
    CHECK(SEQ("00000000000000000001") == 0 && s == 1); /* 20 digits */
    s = 5;
    CHECK(SEQ("") == -EINVAL);
    CHECK(SEQ("18446744073709551616") == -EINVAL);
    CHECK(SEQ("99999999999999999999") == -EINVAL);
    CHECK(SEQ("000000000000000000001") == -EINVAL); /* 21 digits */
    CHECK(SEQ("+1") == -EINVAL);
    CHECK(SEQ("-1") == -EINVAL);
    CHECK(SEQ(" 1") == -EINVAL);
    CHECK(SEQ("1 ") == -EINVAL);
    CHECK(SEQ("1a") == -EINVAL);
    CHECK(SEQ("0x1") == -EINVAL);
    CHECK(SEQ("1.0") == -EINVAL);
    CHECK(SEQ("1\0") == -EINVAL);
    CHECK(SEQ("\xd9\xa1") == -EINVAL); /* an Arabic-Indic digit is not a digit here */
    CHECK(s == 5);
#undef SEQ
    CHECK(cs_seq_parse(NULL, 0, &s) == -EINVAL);
}

static void test_epochs(void)
{
    enum { N = 1000 };
    static uint64_t seen[N];

    for (int i = 0; i < N; i++) {
        seen[i] = cs_epoch_next();
        CHECK(seen[i] != 0);
        CHECK((seen[i] & ~CS_EPOCH_MASK) == 0);
        for (int j = 0; j < i; j++)
            if (seen[j] == seen[i]) {
                CHECK(!"an epoch repeated");
                break;
            }
    }

    /* The counter wraps within 48 bits and skips 0. */
    epoch_last = CS_EPOCH_MASK - 1;
    CHECK(cs_epoch_next() == CS_EPOCH_MASK);
    CHECK(cs_epoch_next() == 1);
    CHECK(cs_epoch_next() == 2);
}

int main(void)
{
    RUN(test_format);
    RUN(test_round_trip);
    RUN(test_strict);
    RUN(test_seq_parse);
    RUN(test_epochs);
    CT_DONE();
}
