/*
 * test_buf.c - the growable buffer: appends, the maximum (nothing half-written past it), consuming
 * from the front and reusing the space, stealing, shrinking after a burst, printf.
 */
#include "../../common/buf.c"

#include "ctest.h"

static void test_append_and_max(void)
{
    cs_buf_t b;
    cs_buf_init(&b, 10);
    CHECK(cs_buf_size(&b) == 0);
    CHECK_STR(cs_buf_data(&b), "");
    CHECK(cs_buf_append(&b, "hello", 5) == 0);
    CHECK(cs_buf_puts(&b, "world") == 0);
    CHECK(cs_buf_size(&b) == 10);
    CHECK_STR(cs_buf_data(&b), "helloworld");
    /* Past the maximum: refused whole, the buffer unchanged. */
    CHECK(cs_buf_append(&b, "!", 1) == -EMSGSIZE);
    CHECK(cs_buf_printf(&b, "%d", 1) == -EMSGSIZE);
    CHECK_STR(cs_buf_data(&b), "helloworld");
    CHECK(b.cap <= 11);
    /* Consuming makes room again. */
    cs_buf_consume(&b, 5);
    CHECK_STR(cs_buf_data(&b), "world");
    CHECK(cs_buf_append(&b, "12345", 5) == 0);
    CHECK_STR(cs_buf_data(&b), "world12345");
    CHECK(cs_buf_append(&b, "x", 1) == -EMSGSIZE);
    cs_buf_truncate(&b, 7);
    CHECK_STR(cs_buf_data(&b), "world12");
    cs_buf_truncate(&b, 70); /* more than held: nothing changes */
    CHECK(cs_buf_size(&b) == 7);
    cs_buf_consume(&b, 100); /* more than held: all */
    CHECK(cs_buf_size(&b) == 0 && b.off == 0 && b.len == 0);
    cs_buf_free(&b);
    CHECK(b.p == NULL && b.max == 10);
}

static void test_unlimited_growth_and_printf(void)
{
    cs_buf_t b;
    cs_buf_init(&b, 0);
    for (int i = 0; i < 10000; i++)
        REQUIRE(cs_buf_printf(&b, "%04d,", i % 10000) == 0);
    CHECK(cs_buf_size(&b) == 50000);
    CHECK(strncmp(cs_buf_data(&b), "0000,0001,", 10) == 0);
    CHECK(strcmp(cs_buf_data(&b) + 49995, "9999,") == 0);
    CHECK(cs_buf_append(&b, NULL, 0) == 0);
    CHECK(cs_buf_reserve(&b, SIZE_MAX - 10) == -EMSGSIZE);
    cs_buf_free(&b);
}

static void test_consume_then_grow_moves_front(void)
{
    cs_buf_t b;
    cs_buf_init(&b, 300);
    char chunk[100];
    memset(chunk, 'a', sizeof(chunk));
    REQUIRE(cs_buf_append(&b, chunk, 100) == 0);
    REQUIRE(cs_buf_append(&b, chunk, 100) == 0);
    cs_buf_consume(&b, 150);
    CHECK(cs_buf_size(&b) == 50);
    memset(chunk, 'b', sizeof(chunk));
    /* 50 held + 100 + 100 = 250 <= 300, though len + n would pass the capacity: the front moves. */
    REQUIRE(cs_buf_append(&b, chunk, 100) == 0);
    REQUIRE(cs_buf_append(&b, chunk, 100) == 0);
    CHECK(cs_buf_size(&b) == 250);
    CHECK(b.off == 0);
    CHECK(cs_buf_data(&b)[49] == 'a' && cs_buf_data(&b)[50] == 'b' && cs_buf_data(&b)[250] == '\0');
    cs_buf_free(&b);
}

static void test_steal_and_shrink(void)
{
    cs_buf_t b;
    size_t n;
    cs_buf_init(&b, 0);
    CHECK(cs_buf_steal(&b, &n) == NULL && n == 0);
    REQUIRE(cs_buf_puts(&b, "abcdef") == 0);
    cs_buf_consume(&b, 2);
    char *s = cs_buf_steal(&b, &n);
    CHECK(n == 4);
    CHECK_STR(s, "cdef");
    free(s);
    CHECK(b.p == NULL && cs_buf_size(&b) == 0);

    char big[8192];
    memset(big, 'z', sizeof(big));
    REQUIRE(cs_buf_append(&b, big, sizeof(big)) == 0);
    cs_buf_shrink(&b, 512); /* not empty: kept */
    CHECK(b.cap > 8192);
    cs_buf_consume(&b, sizeof(big));
    cs_buf_shrink(&b, 512);
    CHECK(b.cap == 512 && cs_buf_size(&b) == 0);
    REQUIRE(cs_buf_puts(&b, "again") == 0);
    CHECK_STR(cs_buf_data(&b), "again");
    cs_buf_consume(&b, 5);
    cs_buf_shrink(&b, 0);
    CHECK(b.p == NULL && b.cap == 0);
    cs_buf_free(&b);
}

static void test_space_and_commit(void)
{
    cs_buf_t b;
    char *p;
    size_t avail, got = 0;
    cs_buf_init(&b, 1000);
    /* Read in pieces as recv() would, until the maximum: never more than it. */
    for (;;) {
        int rc = cs_buf_space(&b, 300, &p, &avail);
        if (rc == -EMSGSIZE)
            break;
        REQUIRE(rc == 0);
        CHECK(avail >= 1 && got + avail <= 1000);
        size_t n = avail > 300 ? 300 : avail;
        memset(p, 'r', n);
        cs_buf_commit(&b, n);
        got += n;
    }
    CHECK(got == 1000 && cs_buf_size(&b) == 1000);
    CHECK(cs_buf_data(&b)[1000] == '\0');
    cs_buf_consume(&b, 400);
    REQUIRE(cs_buf_space(&b, 4096, &p, &avail) == 0);
    CHECK(avail == 400); /* room again, only up to the maximum */
    cs_buf_free(&b);
}

int main(void)
{
    RUN(test_append_and_max);
    RUN(test_unlimited_growth_and_printf);
    RUN(test_consume_then_grow_moves_front);
    RUN(test_steal_and_shrink);
    RUN(test_space_and_commit);
    CT_DONE();
}
