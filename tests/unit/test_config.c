/*
 * test_config.c - defaults, the shipped file, every class of error with its key
 * path, token hashing, the dump without secrets, and the command line.
 */
#include "../../src/auth.c"
#include "../../src/cfgschema.c"
#include "../../src/config.c"
#include "../../src/log.c"
#include "../../src/whconf.c"

#include <sys/stat.h>

#include "ctest.h"

/* The same settings as conf/crewstream.json: every key at its default. */
static const char default_json[] =
    "{\n"
    "  \"listen\": \"127.0.0.1:8000\",\n"
    "  \"ingest\": { \"socket\": null, \"mode\": \"0660\", \"allow_uids\": [] },\n"
    "  \"auth\": { \"api_key\": null, \"tokens\": [], \"jwt_secret\": null },\n"
    "  \"store\": { \"ring_events\": 1024, \"ring_bytes\": 1048576,\n"
    "             \"max_bytes\": 268435456, \"retain_s\": 3600,\n"
    "             \"global_events\": 4096 },\n"
    "  \"limits\": { \"max_clients\": 10000, \"max_producers\": 1024,\n"
    "              \"max_event_bytes\": 1048576, \"head_bytes\": 8192,\n"
    "              \"head_timeout_s\": 5, \"stall_s\": 60, \"json_depth\": 32,\n"
    "              \"max_body_bytes\": 4194304 },\n"
    "  \"heartbeat_s\": 15,\n"
    "  \"shutdown_s\": 5,\n"
    "  \"http\": { \"cors_origins\": [\"*\"], \"metrics_public\": false },\n"
    "  \"log\": { \"level\": \"info\" },\n"
    "  \"journal\": { \"dir\": null, \"fsync\": \"everysec\", \"max_bytes\": 1073741824 },\n"
    "  \"gateway\": { \"default_crew\": null, \"ack_timeout_s\": 10, \"queue\": 1000, \"queue_timeout_s\": "
    "60 }\n"
    "}\n";

/* Every key away from its default, so each one is seen to land in its field. */
static const char full_json[] =
    "{\n"
    "  \"listen\": \"[::1]:9000\",\n"
    "  \"ingest\": { \"socket\": \"/tmp/cs-test.sock\", \"mode\": \"0600\", \"allow_uids\": [0, 1000] },\n"
    "  \"auth\": {\n"
    "    \"api_key\": \"seed-api-key-value\",\n"
    "    \"tokens\": [\n"
    "      { \"name\": \"dash\", \"token\": \"tok-dash-literal\", \"scopes\": [\"read\", \"respond\"],\n"
    "        \"executions\": [\"*\"] },\n"
    "      { \"name\": \"runner\",\n"
    "        \"sha256\": \"447B7514AF61C88A422274F581DEB10CF5BAE817A7809B3E762412FE01DCA462\",\n"
    "        \"scopes\": [\"publish\"], \"executions\": [\"exec-1\", \"batch-*\"] },\n"
    "      { \"name\": \"ops\", \"token\": \"tok-ops-literal\",\n"
    "        \"scopes\": [\"admin\", \"read\", \"respond\", \"publish\", \"kickoff\"] }\n"
    "    ],\n"
    "    \"jwt_secret\": \"jwt-secret-value\"\n"
    "  },\n"
    "  \"store\": { \"ring_events\": 10, \"ring_bytes\": 2048, \"max_bytes\": 65536, \"retain_s\": 0,\n"
    "             \"global_events\": 20 },\n"
    "  \"limits\": { \"max_clients\": 11, \"max_producers\": 12, \"max_event_bytes\": 4096, \"head_bytes\": "
    "1024,\n"
    "              \"head_timeout_s\": 13, \"stall_s\": 14, \"json_depth\": 15, \"max_body_bytes\": 8192 },\n"
    "  \"heartbeat_s\": 16,\n"
    "  \"shutdown_s\": 0,\n"
    "  \"http\": { \"cors_origins\": [\"https://app.example.com\", \"http://localhost:3000\"],\n"
    "            \"metrics_public\": true },\n"
    "  \"log\": { \"level\": \"debug\" }\n"
    "}\n";

static int hex_is(const unsigned char *md, const char *hex)
{
    char s[65];
    for (int i = 0; i < 32; i++)
        snprintf(s + 2 * i, 3, "%02x", md[i]);
    return strcmp(s, hex) == 0;
}

/* Returns what cs_config_dump prints (malloc'd). */
static char *dump_str(const cs_config_t *cfg)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    REQUIRE(f != NULL);
    cs_config_dump(cfg, f);
    fclose(f);
    return s;
}

static char tmpdir[64];

static char *write_temp(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults(void)
{
    cs_config_t cfg;
    REQUIRE(cs_config_defaults(&cfg) == 0);
    CHECK_STR(cfg.listen, "127.0.0.1:8000");
    CHECK_STR(cfg.listen_host, "127.0.0.1");
    CHECK(cfg.listen_port == 8000);
    CHECK(cfg.ingest_socket != NULL);
    CHECK(cfg.ingest_mode == 0660);
    CHECK(cfg.n_allow_uids == 0);
    CHECK(cfg.api_key == NULL && cfg.jwt_secret == NULL && cfg.n_tokens == 0);
    CHECK(cfg.ring_events == 1024);
    CHECK(cfg.ring_bytes == 1048576);
    CHECK(cfg.max_bytes == 268435456);
    CHECK(cfg.retain_s == 3600);
    CHECK(cfg.global_events == 4096);
    CHECK(cfg.max_clients == 10000);
    CHECK(cfg.max_producers == 1024);
    CHECK(cfg.max_event_bytes == 1048576);
    CHECK(cfg.head_bytes == 8192);
    CHECK(cfg.head_timeout_s == 5);
    CHECK(cfg.stall_s == 60);
    CHECK(cfg.json_depth == 32);
    CHECK(cfg.max_body_bytes == 4194304);
    CHECK(cfg.heartbeat_s == 15);
    CHECK(cfg.shutdown_s == 5);
    REQUIRE(cfg.n_cors_origins == 1);
    CHECK_STR(cfg.cors_origins[0], "*");
    CHECK(cfg.metrics_public == 0);
    CHECK(cfg.log_level == CS_LOG_INFO);
    cs_config_free(&cfg);
    CHECK(cfg.listen == NULL);
    cs_config_free(&cfg); /* freeing twice is harmless */
}

static char *save_env(const char *name)
{
    const char *v = getenv(name);
    return v != NULL ? strdup(v) : NULL;
}

static void restore_env(const char *name, char *saved)
{
    if (saved != NULL)
        setenv(name, saved, 1);
    else
        unsetenv(name);
    free(saved);
}

/* The default ingest socket under the environment as it is now. */
static void expect_default_socket(const char *want)
{
    char *s = cs_config_default_socket();
    CHECK_STR(s, want);
    free(s);
}

static void expect_journal_dir(const char *want)
{
    cs_config_t cfg;
    REQUIRE(cs_config_defaults(&cfg) == 0);
    if (want == NULL)
        CHECK(cfg.journal_dir == NULL);
    else
        CHECK_STR(cfg.journal_dir, want);
    cs_config_free(&cfg);
}

/* journal.dir: null means $STATE_DIRECTORY (its first entry), else memory only; fsync and max_bytes. */
static void test_default_journal_dir(void)
{
    cs_config_t cfg;
    char err[256];

    unsetenv("STATE_DIRECTORY");
    expect_journal_dir(NULL);
    setenv("STATE_DIRECTORY", "/var/lib/crewstream", 1);
    expect_journal_dir("/var/lib/crewstream");
    setenv("STATE_DIRECTORY", "/var/lib/crewstream/:/var/lib/other", 1);
    expect_journal_dir("/var/lib/crewstream");
    setenv("STATE_DIRECTORY", ":/var/lib/other", 1);
    expect_journal_dir(NULL);
    setenv("STATE_DIRECTORY", "", 1);
    expect_journal_dir(NULL);
    unsetenv("STATE_DIRECTORY");

    REQUIRE(cs_config_defaults(&cfg) == 0);
    CHECK(cfg.journal_fsync == CS_JSYNC_EVERYSEC);
    CHECK(cfg.journal_max_bytes == 1073741824u);
    static const char ok[] = "{\"journal\":{\"dir\":\"/j\",\"fsync\":\"always\",\"max_bytes\":8388608}}";
    CHECK(cs_config_load_buffer(&cfg, ok, strlen(ok), err, sizeof(err)) == 0);
    CHECK_STR(cfg.journal_dir, "/j");
    CHECK(cfg.journal_fsync == CS_JSYNC_ALWAYS);
    CHECK(cfg.journal_max_bytes == 8388608u);
    static const char bad_fsync[] = "{\"journal\":{\"fsync\":\"sometimes\"}}";
    CHECK(cs_config_load_buffer(&cfg, bad_fsync, strlen(bad_fsync), err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "journal.fsync") != NULL && strstr(err, "everysec") != NULL);
    static const char bad_dir[] = "{\"journal\":{\"dir\":5}}";
    CHECK(cs_config_load_buffer(&cfg, bad_dir, strlen(bad_dir), err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "journal.dir") != NULL && strstr(err, "directory path") != NULL);
    static const char small[] = "{\"journal\":{\"max_bytes\":1024}}";
    CHECK(cs_config_load_buffer(&cfg, small, strlen(small), err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "journal.max_bytes") != NULL);
    /* A refused file changed nothing. */
    CHECK_STR(cfg.journal_dir, "/j");
    cs_config_free(&cfg);
}

static void test_default_socket(void)
{
    char *saved_xdg = save_env("XDG_RUNTIME_DIR");
    char *saved_rt = save_env("RUNTIME_DIRECTORY");

    unsetenv("RUNTIME_DIRECTORY");
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    expect_default_socket("/run/user/1000/crewstream.sock");
    setenv("XDG_RUNTIME_DIR", "", 1);
    expect_default_socket("/tmp/crewstream.sock");
    unsetenv("XDG_RUNTIME_DIR");
    expect_default_socket("/tmp/crewstream.sock");

    /* Under systemd (RuntimeDirectory=crewstream) the service's own directory wins over XDG_RUNTIME_DIR. */
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    setenv("RUNTIME_DIRECTORY", "/run/crewstream", 1);
    expect_default_socket("/run/crewstream/ingest.sock");
    /* Several directories (RuntimeDirectory=crewstream other): the first one. */
    setenv("RUNTIME_DIRECTORY", "/run/crewstream:/run/other", 1);
    expect_default_socket("/run/crewstream/ingest.sock");
    setenv("RUNTIME_DIRECTORY", "/run/crewstream/", 1);
    expect_default_socket("/run/crewstream/ingest.sock");
    /* Empty, or an empty first entry: as if unset. */
    setenv("RUNTIME_DIRECTORY", "", 1);
    expect_default_socket("/run/user/1000/crewstream.sock");
    setenv("RUNTIME_DIRECTORY", ":/run/other", 1);
    unsetenv("XDG_RUNTIME_DIR");
    expect_default_socket("/tmp/crewstream.sock");

    /* "socket": null in the file means the same default. */
    cs_config_t cfg;
    char err[256];
    unsetenv("RUNTIME_DIRECTORY");
    REQUIRE(cs_config_defaults(&cfg) == 0);
    static const char set[] = "{\"ingest\":{\"socket\":\"/x.sock\"}}";
    static const char unset[] = "{\"ingest\":{\"socket\":null}}";
    CHECK(cs_config_load_buffer(&cfg, set, strlen(set), err, sizeof(err)) == 0);
    CHECK_STR(cfg.ingest_socket, "/x.sock");
    CHECK(cs_config_load_buffer(&cfg, unset, strlen(unset), err, sizeof(err)) == 0);
    CHECK_STR(cfg.ingest_socket, "/tmp/crewstream.sock");
    setenv("RUNTIME_DIRECTORY", "/run/crewstream", 1);
    CHECK(cs_config_load_buffer(&cfg, set, strlen(set), err, sizeof(err)) == 0);
    CHECK_STR(cfg.ingest_socket, "/x.sock"); /* a configured path stays as it is */
    CHECK(cs_config_load_buffer(&cfg, unset, strlen(unset), err, sizeof(err)) == 0);
    CHECK_STR(cfg.ingest_socket, "/run/crewstream/ingest.sock");
    cs_config_free(&cfg);
    REQUIRE(cs_config_defaults(&cfg) == 0);
    CHECK_STR(cfg.ingest_socket, "/run/crewstream/ingest.sock");
    cs_config_free(&cfg);

    restore_env("XDG_RUNTIME_DIR", saved_xdg);
    restore_env("RUNTIME_DIRECTORY", saved_rt);
}

/* The embedded default text and conf/crewstream.json both load, to exactly the defaults. */
static void test_default_files(void)
{
    cs_config_t def, cfg;
    char err[512] = "";
    char path[4096];
    const char *src = getenv("CS_SOURCE_DIR");

    REQUIRE(cs_config_defaults(&def) == 0);
    char *want = dump_str(&def);

    REQUIRE(cs_config_defaults(&cfg) == 0);
    CHECK(cs_config_load_buffer(&cfg, default_json, strlen(default_json), err, sizeof(err)) == 0);
    CHECK_STR(err, "");
    char *got = dump_str(&cfg);
    CHECK_STR(got, want);
    free(got);
    cs_config_free(&cfg);

    /* Without CS_SOURCE_DIR, the source tree is found from this file's own (absolute) path. */
    if (src != NULL && src[0] != '\0') {
        snprintf(path, sizeof(path), "%s/conf/crewstream.json", src);
    } else if (__FILE__[0] == '/' && strstr(__FILE__, "/tests/unit/") != NULL) {
        snprintf(path, sizeof(path), "%.*s/conf/crewstream.json",
                 (int)(strstr(__FILE__, "/tests/unit/") - __FILE__), __FILE__);
    } else {
        fprintf(stderr, "   skipped conf/crewstream.json: set CS_SOURCE_DIR to the source tree\n");
        path[0] = '\0';
    }
    if (path[0] != '\0') {
        REQUIRE(cs_config_defaults(&cfg) == 0);
        int rc = cs_config_load_file(&cfg, path, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "   %s\n", err);
        CHECK(rc == 0);
        got = dump_str(&cfg);
        CHECK_STR(got, want);
        free(got);
        cs_config_free(&cfg);
    }
    free(want);
    cs_config_free(&def);
}

static void test_full(void)
{
    cs_config_t cfg;
    char err[512] = "";

    REQUIRE(cs_config_defaults(&cfg) == 0);
    int rc = cs_config_load_buffer(&cfg, full_json, strlen(full_json), err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "   %s\n", err);
    REQUIRE(rc == 0);
    CHECK_STR(cfg.listen, "[::1]:9000");
    CHECK_STR(cfg.listen_host, "::1");
    CHECK(cfg.listen_port == 9000);
    CHECK_STR(cfg.ingest_socket, "/tmp/cs-test.sock");
    CHECK(cfg.ingest_mode == 0600);
    REQUIRE(cfg.n_allow_uids == 2);
    CHECK(cfg.allow_uids[0] == 0 && cfg.allow_uids[1] == 1000);
    CHECK_STR(cfg.api_key, "seed-api-key-value");
    CHECK_STR(cfg.jwt_secret, "jwt-secret-value");
    REQUIRE(cfg.n_tokens == 3);
    CHECK_STR(cfg.tokens[0].name, "dash");
    CHECK(hex_is(cfg.tokens[0].sha256, "e7df8fd3a4dec0c2b7892cac21fc313bfb08ffd1fe5482c8d6b983689591a2a0"));
    CHECK(cfg.tokens[0].scopes == (CS_SCOPE_READ | CS_SCOPE_RESPOND));
    REQUIRE(cfg.tokens[0].n_executions == 1);
    CHECK_STR(cfg.tokens[0].executions[0], "*");
    CHECK_STR(cfg.tokens[1].name, "runner");
    CHECK(hex_is(cfg.tokens[1].sha256, "447b7514af61c88a422274f581deb10cf5bae817a7809b3e762412fe01dca462"));
    CHECK(cfg.tokens[1].scopes == CS_SCOPE_PUBLISH);
    REQUIRE(cfg.tokens[1].n_executions == 2);
    CHECK_STR(cfg.tokens[1].executions[0], "exec-1");
    CHECK_STR(cfg.tokens[1].executions[1], "batch-*");
    CHECK_STR(cfg.tokens[2].name, "ops");
    CHECK(cfg.tokens[2].scopes == CS_SCOPE_ALL);
    REQUIRE(cfg.tokens[2].n_executions == 1); /* the default: every execution */
    CHECK_STR(cfg.tokens[2].executions[0], "*");
    CHECK(cfg.ring_events == 10 && cfg.ring_bytes == 2048 && cfg.max_bytes == 65536 && cfg.retain_s == 0 &&
          cfg.global_events == 20);
    CHECK(cfg.max_clients == 11 && cfg.max_producers == 12 && cfg.max_event_bytes == 4096 &&
          cfg.head_bytes == 1024 && cfg.head_timeout_s == 13 && cfg.stall_s == 14 && cfg.json_depth == 15 &&
          cfg.max_body_bytes == 8192);
    CHECK(cfg.heartbeat_s == 16 && cfg.shutdown_s == 0);
    REQUIRE(cfg.n_cors_origins == 2);
    CHECK_STR(cfg.cors_origins[0], "https://app.example.com");
    CHECK_STR(cfg.cors_origins[1], "http://localhost:3000");
    CHECK(cfg.metrics_public == 1);
    CHECK(cfg.log_level == CS_LOG_DEBUG);
    cs_config_free(&cfg);
}

/* The literal is hashed (the known SHA-256 of "secret") and not kept anywhere in cfg. */
static void test_token_hash(void)
{
    static const char js[] =
        "{\"auth\":{\"tokens\":[{\"name\":\"t\",\"token\":\"secret\",\"scopes\":[\"read\"]}]}}";
    cs_config_t cfg;
    char err[256];

    REQUIRE(cs_config_defaults(&cfg) == 0);
    REQUIRE(cs_config_load_buffer(&cfg, js, strlen(js), err, sizeof(err)) == 0);
    REQUIRE(cfg.n_tokens == 1);
    CHECK(hex_is(cfg.tokens[0].sha256, "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"));
    CHECK(cfg.tokens[0].scopes == CS_SCOPE_READ);
    cs_config_free(&cfg);
}

/* Loads js over the defaults and expects -EINVAL with needle in the message and cfg unchanged. */
static void expect_error_at(int line, const char *js, const char *needle)
{
    cs_config_t cfg;
    char err[512] = "";

    REQUIRE(cs_config_defaults(&cfg) == 0);
    int rc = cs_config_load_buffer(&cfg, js, strlen(js), err, sizeof(err));
    ct_checks++;
    if (rc != -EINVAL || strstr(err, needle) == NULL || strchr(err, '\n') != NULL) {
        ct_failures++;
        fprintf(stderr, "%s:%d: for %s\n  expected -EINVAL and \"%s\"\n  got %d and \"%s\"\n", __FILE__, line,
                js, needle, rc, err);
    }
    /* A refused file changes nothing. */
    CHECK(cfg.ring_events == 1024 && cfg.n_tokens == 0 && cfg.api_key == NULL);
    CHECK_STR(cfg.listen, "127.0.0.1:8000");
    cs_config_free(&cfg);
}
#define EXPECT_ERROR(js, needle) expect_error_at(__LINE__, js, needle)

#define TOK(extra) "{\"auth\":{\"tokens\":[{\"name\":\"a\"," extra "}]}}"
#define HEX64      "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"

static void test_errors(void)
{
    /* Unknown keys, at the top and nested, with a suggestion when one is close. */
    EXPECT_ERROR("{\"stroe\":{}}", "unknown key \"stroe\" (did you mean \"store\"?)");
    EXPECT_ERROR("{\"zzzzzz\":1}", "unknown key \"zzzzzz\" (known here: listen, ingest, auth,");
    EXPECT_ERROR("{\"store\":{\"ring_evnets\":1}}",
                 "unknown key \"store.ring_evnets\" (did you mean \"store.ring_events\"?)");
    EXPECT_ERROR("{\"http\":{\"cors\":[]}}", "unknown key \"http.cors\"");
    EXPECT_ERROR(TOK("\"token\":\"x\",\"scopes\":[\"read\"],\"colour\":1"),
                 "unknown key \"auth.tokens[0].colour\"");

    /* Wrong types. */
    EXPECT_ERROR("{\"store\":5}", "store: expected an object, got 5");
    EXPECT_ERROR("{\"store\":{\"ring_events\":\"12\"}}", "store.ring_events: expected an integer >= 1");
    EXPECT_ERROR("{\"store\":{\"ring_events\":1.5}}", "store.ring_events: expected an integer >= 1");
    EXPECT_ERROR("{\"store\":{\"ring_events\":null}}", "store.ring_events: expected an integer >= 1");
    EXPECT_ERROR("{\"http\":{\"metrics_public\":\"yes\"}}", "http.metrics_public: expected true or false");
    EXPECT_ERROR("{\"http\":{\"cors_origins\":\"*\"}}", "http.cors_origins: expected an array of strings");
    EXPECT_ERROR("{\"http\":{\"cors_origins\":[\"*\",3]}}",
                 "http.cors_origins[1]: expected a non-empty string");
    EXPECT_ERROR("{\"log\":{\"level\":3}}", "log.level: expected one of");
    EXPECT_ERROR("{\"listen\":8000}", "listen: expected \"HOST:PORT\"");
    EXPECT_ERROR("{\"auth\":{\"tokens\":{}}}", "auth.tokens: expected an array of token objects");
    EXPECT_ERROR("{\"auth\":{\"tokens\":[\"dash\"]}}", "auth.tokens[0]: expected a token object");
    EXPECT_ERROR("{\"auth\":[]}", "auth: expected an object");

    /* Out of range. */
    EXPECT_ERROR("{\"store\":{\"ring_events\":0}}",
                 "store.ring_events: expected an integer >= 1 and <= 1048576, got 0");
    EXPECT_ERROR("{\"store\":{\"ring_events\":-3}}", "store.ring_events: expected an integer >= 1");
    EXPECT_ERROR("{\"store\":{\"max_bytes\":100}}", "store.max_bytes: expected an integer >= 65536");
    EXPECT_ERROR("{\"limits\":{\"head_bytes\":100}}", "limits.head_bytes: expected an integer >= 1024");
    EXPECT_ERROR("{\"limits\":{\"max_clients\":99999999}}",
                 "limits.max_clients: expected an integer >= 1 and <= 1000000");
    EXPECT_ERROR("{\"limits\":{\"json_depth\":0}}", "limits.json_depth: expected an integer >= 1");
    EXPECT_ERROR("{\"heartbeat_s\":0}", "heartbeat_s: expected an integer >= 1");
    EXPECT_ERROR("{\"shutdown_s\":4000}", "shutdown_s: expected an integer >= 0 and <= 3600");
    EXPECT_ERROR("{\"store\":{\"ring_bytes\":99999999999999999999}}", "line 1, column");

    /* Listen, mode, uids, socket. */
    EXPECT_ERROR("{\"listen\":\"x\"}", "listen: expected \"HOST:PORT\"");
    EXPECT_ERROR("{\"listen\":\"::1:80\"}", "listen: expected \"HOST:PORT\"");
    EXPECT_ERROR("{\"listen\":\"h:0\"}", "listen: expected \"HOST:PORT\" with a port from 1 to 65535");
    EXPECT_ERROR("{\"ingest\":{\"mode\":\"0999\"}}", "ingest.mode: expected an octal string");
    EXPECT_ERROR("{\"ingest\":{\"mode\":\"1777\"}}", "ingest.mode: expected an octal string");
    EXPECT_ERROR("{\"ingest\":{\"mode\":\"rw-rw----\"}}", "ingest.mode: expected an octal string");
    EXPECT_ERROR("{\"ingest\":{\"mode\":660}}",
                 "ingest.mode: expected an octal string like \"0660\", got 660 (write");
    EXPECT_ERROR("{\"ingest\":{\"allow_uids\":[1000,-1]}}", "ingest.allow_uids[1]: expected a numeric uid");
    EXPECT_ERROR("{\"ingest\":{\"allow_uids\":[\"root\"]}}", "ingest.allow_uids[0]: expected a numeric uid");
    EXPECT_ERROR("{\"ingest\":{\"socket\":\"\"}}", "ingest.socket: expected a non-empty string");
    EXPECT_ERROR("{\"ingest\":{\"socket\":\"/tmp/"
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                 "aaaaaaaaaaaaaaa"
                 "aaaaaaaaaaa\"}}",
                 "ingest.socket: path is 122 bytes long; a Unix socket path holds at most 107");

    /* Tokens. */
    EXPECT_ERROR(
        "{\"auth\":{\"tokens\":[{\"name\":\"a\",\"token\":\"x\",\"scopes\":[\"read\"]},"
        "{\"name\":\"b\",\"token\":\"y\",\"scopes\":[\"wrtie\"]}]}}",
        "auth.tokens[1].scopes[0]: unknown scope \"wrtie\" (read, respond, publish, admin, kickoff)");
    EXPECT_ERROR(TOK("\"token\":\"x\",\"sha256\":\"" HEX64 "\",\"scopes\":[\"read\"]"),
                 "auth.tokens[0]: give either \"token\" or \"sha256\", not both");
    EXPECT_ERROR(TOK("\"scopes\":[\"read\"]"), "auth.tokens[0]: missing key \"token\" or \"sha256\"");
    EXPECT_ERROR(TOK("\"sha256\":\"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25g\","
                     "\"scopes\":[\"read\"]"),
                 "auth.tokens[0].sha256: expected 64 hexadecimal digits, found 'g' at offset 63");
    EXPECT_ERROR(TOK("\"sha256\":\"2bb80d\",\"scopes\":[\"read\"]"),
                 "auth.tokens[0].sha256: expected 64 hexadecimal digits");
    EXPECT_ERROR(TOK("\"sha256\":\"" HEX64 "  -\",\"scopes\":[\"read\"]"),
                 "auth.tokens[0].sha256: expected 64 hexadecimal digits");
    EXPECT_ERROR("{\"auth\":{\"tokens\":[{\"name\":\"dash\",\"token\":\"x\",\"scopes\":[\"read\"]},"
                 "{\"name\":\"dash\",\"token\":\"y\",\"scopes\":[\"read\"]}]}}",
                 "auth.tokens[1].name: duplicate token name \"dash\" (auth.tokens[0] has it too)");
    EXPECT_ERROR("{\"auth\":{\"tokens\":[{\"name\":\"a\",\"token\":\"secret\",\"scopes\":[\"read\"]},"
                 "{\"name\":\"b\",\"sha256\":\"" HEX64 "\",\"scopes\":[\"read\"]}]}}",
                 "auth.tokens[1]: the same token as auth.tokens[0] (\"a\")");
    EXPECT_ERROR("{\"auth\":{\"tokens\":[{\"name\":\"\",\"token\":\"x\",\"scopes\":[\"read\"]}]}}",
                 "auth.tokens[0].name: expected a non-empty string");
    EXPECT_ERROR("{\"auth\":{\"tokens\":[{\"token\":\"x\",\"scopes\":[\"read\"]}]}}",
                 "auth.tokens[0]: missing key \"name\"");
    EXPECT_ERROR(TOK("\"token\":\"x\""), "auth.tokens[0]: missing key \"scopes\"");
    EXPECT_ERROR(TOK("\"token\":\"x\",\"scopes\":[]"), "auth.tokens[0].scopes: expected at least one scope");
    EXPECT_ERROR(TOK("\"token\":\"x\",\"scopes\":\"read\""),
                 "auth.tokens[0].scopes: expected an array of scopes");
    EXPECT_ERROR(TOK("\"token\":\"x\",\"scopes\":[\"read\"],\"executions\":[]"),
                 "auth.tokens[0].executions: expected at least one string");
    EXPECT_ERROR(TOK("\"token\":\"x\",\"scopes\":[\"read\"],\"executions\":[\"ok\",\"a b\"]"),
                 "auth.tokens[0].executions[1]: \"a b\" is not an execution id or glob");
    EXPECT_ERROR(TOK("\"token\":\"\",\"scopes\":[\"read\"]"),
                 "auth.tokens[0].token: expected a non-empty string, got an empty string");
    EXPECT_ERROR(TOK("\"token\":\"(set)\",\"scopes\":[\"read\"]"), "auth.tokens[0].token: \"(set)\" is what");
    EXPECT_ERROR(TOK("\"sha256\":\"(set)\",\"scopes\":[\"read\"]"), "auth.tokens[0].sha256: expected 64");

    /* Secrets: the message names the type, never the value. */
    EXPECT_ERROR("{\"auth\":{\"api_key\":987654321}}",
                 "auth.api_key: expected a non-empty string or null, got an integer");
    EXPECT_ERROR("{\"auth\":{\"api_key\":\"\"}}",
                 "auth.api_key: expected a non-empty string or null, got an empty string");
    EXPECT_ERROR("{\"auth\":{\"api_key\":\"(set)\"}}",
                 "auth.api_key: \"(set)\" is what --check-config prints");
    EXPECT_ERROR("{\"auth\":{\"jwt_secret\":true}}",
                 "auth.jwt_secret: expected a non-empty string or null, got a boolean");

    /* CORS origins and log levels. */
    EXPECT_ERROR("{\"http\":{\"cors_origins\":[\"https://a.example/\"]}}",
                 "http.cors_origins[0]: expected \"*\" or an origin");
    EXPECT_ERROR("{\"http\":{\"cors_origins\":[\"https://a.example\\r\\nX-Evil: 1\"]}}",
                 "http.cors_origins[0]: an origin holds no spaces, control");
    EXPECT_ERROR("{\"log\":{\"level\":\"loud\"}}",
                 "log.level: unknown level \"loud\" (error, warn, info, debug)");

    /* The document itself. */
    EXPECT_ERROR("[]", "expected a JSON object at the top level, got an array");
    EXPECT_ERROR("{\n  \"listen\": \n}", "line 3, column");
    EXPECT_ERROR("{\"heartbeat_s\": 1, \"heartbeat_s\": 2}", "duplicate object key");
    EXPECT_ERROR("", "line 1, column");
    EXPECT_ERROR("{\"listen\":\"127.0.0.1:8000\"} x", "end of file expected");
    /* A control character from the file cannot split the message's one line. */
    EXPECT_ERROR("{\"a\\nb\":1}", "unknown key \"a?b\"");
}

static void test_error_exact(void)
{
    cs_config_t cfg;
    char err[512];

    REQUIRE(cs_config_defaults(&cfg) == 0);
    CHECK(cs_config_load_buffer(&cfg, "{\"stroe\":{}}", 12, err, sizeof(err)) == -EINVAL);
    CHECK_STR(err, "unknown key \"stroe\" (did you mean \"store\"?)");

    /* Through a file, every message starts with the file's name. */
    char *path = write_temp("config.json", "{\n  \"store\": { \"ring_events\": 0 }\n}\n");
    CHECK(cs_config_load_file(&cfg, path, err, sizeof(err)) == -EINVAL);
    char want[512];
    snprintf(want, sizeof(want), "%s: store.ring_events: expected an integer >= 1 and <= 1048576, got 0",
             path);
    CHECK_STR(err, want);
    path = write_temp("config.json", "{\n  \"store\": { \"ring_events\": 1, }\n}\n");
    CHECK(cs_config_load_file(&cfg, path, err, sizeof(err)) == -EINVAL);
    snprintf(want, sizeof(want), "%s: line 2, column", path);
    CHECK(strncmp(err, want, strlen(want)) == 0);

    /* I/O errors keep their errno. */
    CHECK(cs_config_load_file(&cfg, "/nonexistent/crewstream.json", err, sizeof(err)) == -ENOENT);
    CHECK_STR(err, "/nonexistent/crewstream.json: No such file or directory");
    CHECK(cs_config_load_file(&cfg, tmpdir, err, sizeof(err)) == -EISDIR);
    CHECK(strstr(err, "is a directory") != NULL);
    CHECK(cfg.ring_events == 1024);
    cs_config_free(&cfg);
}

/* A file sets only the keys it names; a refused file leaves the previous load in place. */
static void test_merge_and_rollback(void)
{
    cs_config_t cfg;
    char err[512];
    static const char a[] =
        "{\"store\":{\"ring_events\":5},\"auth\":{\"api_key\":\"k1\",\"tokens\":[{\"name\":\"x\","
        "\"token\":\"secret\",\"scopes\":[\"read\"]}]}}";
    static const char b[] = "{\"heartbeat_s\":2,\"http\":{\"cors_origins\":[]}}";
    static const char bad[] =
        "{\"store\":{\"ring_events\":7},\"auth\":{\"api_key\":null,\"tokens\":[]},\"oops\":1}";

    REQUIRE(cs_config_defaults(&cfg) == 0);
    REQUIRE(cs_config_load_buffer(&cfg, a, strlen(a), err, sizeof(err)) == 0);
    REQUIRE(cs_config_load_buffer(&cfg, b, strlen(b), err, sizeof(err)) == 0);
    CHECK(cfg.ring_events == 5 && cfg.heartbeat_s == 2 && cfg.n_cors_origins == 0);
    CHECK_STR(cfg.api_key, "k1");
    CHECK(cs_config_load_buffer(&cfg, bad, strlen(bad), err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "unknown key \"oops\"") != NULL);
    CHECK(cfg.ring_events == 5);
    CHECK_STR(cfg.api_key, "k1");
    REQUIRE(cfg.n_tokens == 1);
    CHECK_STR(cfg.tokens[0].name, "x");
    /* null clears a secret; an empty list clears the tokens. */
    static const char clear[] = "{\"auth\":{\"api_key\":null,\"tokens\":[]}}";
    CHECK(cs_config_load_buffer(&cfg, clear, strlen(clear), err, sizeof(err)) == 0);
    CHECK(cfg.api_key == NULL && cfg.n_tokens == 0);
    cs_config_free(&cfg);
}

static void test_dump(void)
{
    cs_config_t cfg, again;
    char err[512];
    json_error_t je;

    REQUIRE(cs_config_defaults(&cfg) == 0);
    REQUIRE(cs_config_load_buffer(&cfg, full_json, strlen(full_json), err, sizeof(err)) == 0);
    char *s = dump_str(&cfg);
    CHECK(strstr(s, "seed-api-key-value") == NULL);
    CHECK(strstr(s, "jwt-secret-value") == NULL);
    CHECK(strstr(s, "tok-dash-literal") == NULL);
    CHECK(strstr(s, "e7df8fd3a4dec0c2") == NULL && strstr(s, "447b7514af61c88a") == NULL &&
          strstr(s, "447B7514AF61C88A") == NULL);

    /* The same shape as the file. */
    json_t *root = json_loads(s, 0, &je);
    REQUIRE(root != NULL);
    CHECK_STR(json_string_value(json_object_get(root, "listen")), "[::1]:9000");
    CHECK_STR(json_string_value(json_object_get(json_object_get(root, "ingest"), "mode")), "0600");
    json_t *auth = json_object_get(root, "auth");
    CHECK_STR(json_string_value(json_object_get(auth, "api_key")), "(set)");
    CHECK_STR(json_string_value(json_object_get(auth, "jwt_secret")), "(set)");
    json_t *tokens = json_object_get(auth, "tokens");
    REQUIRE(json_array_size(tokens) == 3);
    json_t *t0 = json_array_get(tokens, 0);
    CHECK_STR(json_string_value(json_object_get(t0, "name")), "dash");
    CHECK_STR(json_string_value(json_object_get(t0, "sha256")), "(set)");
    CHECK(json_object_get(t0, "token") == NULL);
    CHECK(json_array_size(json_object_get(t0, "scopes")) == 2);
    CHECK(json_array_size(json_object_get(json_array_get(tokens, 1), "executions")) == 2);
    CHECK(json_integer_value(json_object_get(json_object_get(root, "store"), "ring_events")) == 10);
    CHECK(json_integer_value(json_object_get(json_object_get(root, "limits"), "max_body_bytes")) == 8192);
    CHECK(json_is_true(json_object_get(json_object_get(root, "http"), "metrics_public")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(root, "log"), "level")), "debug");
    json_decref(root);

    /* Without secrets the dump is itself a valid configuration, and reads back to the same dump. */
    static const char nosecrets[] = "{\"auth\":{\"api_key\":null,\"tokens\":[],\"jwt_secret\":null}}";
    CHECK(cs_config_load_buffer(&cfg, nosecrets, strlen(nosecrets), err, sizeof(err)) == 0);
    free(s);
    s = dump_str(&cfg);
    REQUIRE(cs_config_defaults(&again) == 0);
    int rc = cs_config_load_buffer(&again, s, strlen(s), err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "   %s\n", err);
    CHECK(rc == 0);
    char *s2 = dump_str(&again);
    CHECK_STR(s2, s);
    free(s2);
    free(s);
    cs_config_free(&again);
    cs_config_free(&cfg);
    cs_config_dump(&cfg, NULL); /* no stream: nothing happens */
}

static void test_parse_listen(void)
{
    char *host = NULL;
    uint16_t port = 0;

    CHECK(cs_config_parse_listen("127.0.0.1:8000", &host, &port) == 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK(port == 8000);
    free(host);
    CHECK(cs_config_parse_listen("[::1]:9000", &host, &port) == 0);
    CHECK_STR(host, "::1");
    CHECK(port == 9000);
    free(host);
    CHECK(cs_config_parse_listen("localhost:1", &host, &port) == 0);
    CHECK_STR(host, "localhost");
    CHECK(port == 1);
    free(host);
    CHECK(cs_config_parse_listen("0.0.0.0:65535", &host, &port) == 0);
    CHECK(port == 65535);
    free(host);
    CHECK(cs_config_parse_listen("[fe80::1%eth0]:80", &host, &port) == 0);
    CHECK_STR(host, "fe80::1%eth0");
    free(host);

    static const char *const bad[] = {
        "x",      ":80",   "h:0",     "h:70000", "h:8a",   "h:",      "",
        "[::1]",  "[]:80", "[::1]80", "::1:80",  "h:-1",   "h:+80",   "h:080000",
        "a b:80", "h:80 ", "[x]:80",  "h:8:0",   "[::1]:", "[::1]:0", "h:99999"};
    host = NULL;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = cs_config_parse_listen(bad[i], &host, &port);
        if (rc != -EINVAL)
            fprintf(stderr, "   accepted \"%s\"\n", bad[i]);
        CHECK(rc == -EINVAL);
        CHECK(host == NULL);
    }
    CHECK(cs_config_parse_listen(NULL, &host, &port) == -EINVAL);
}

static void test_apply_env(void)
{
    cs_config_t cfg;
    REQUIRE(cs_config_defaults(&cfg) == 0);
    unsetenv("CREWSTREAM_API_KEY");
    unsetenv("CREWSTREAM_JWT_SECRET");
    CHECK(cs_config_apply_env(&cfg) == 0);
    CHECK(cfg.api_key == NULL && cfg.jwt_secret == NULL);
    setenv("CREWSTREAM_API_KEY", "k", 1);
    setenv("CREWSTREAM_JWT_SECRET", "j", 1);
    CHECK(cs_config_apply_env(&cfg) == 0);
    CHECK(cs_config_apply_env(&cfg) == 0);
    CHECK_STR(cfg.api_key, "k");
    CHECK_STR(cfg.jwt_secret, "j");
    unsetenv("CREWSTREAM_API_KEY");
    unsetenv("CREWSTREAM_JWT_SECRET");
    cs_config_free(&cfg);
}

/* ---- the table itself ---- */

typedef void (*row_fn)(const cs_cfg_field_t *f, const char *path, void *arg);

static void each_row(const cs_cfg_field_t *fields, const char *prefix, row_fn fn, void *arg)
{
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++) {
        char path[128];
        snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] != '\0' ? "." : "", f->key);
        if (f->kind == CS_CFG_OBJECT)
            each_row(f->sub, path, fn, arg);
        else
            fn(f, path, arg);
    }
}

static void check_row(const cs_cfg_field_t *f, const char *path, void *arg)
{
    (void)arg;
    /* Every key has a default, and it is a valid value of its own row (its own parser, its own bounds). */
    if (f->def == NULL)
        fprintf(stderr, "   %s has no default\n", path);
    CHECK(f->def != NULL);
    if (f->kind == CS_CFG_SIZE || f->kind == CS_CFG_UINT) {
        unsigned long long v = strtoull(f->def, NULL, 10);
        if (v < f->min || v > f->max)
            fprintf(stderr, "   %s: default %llu outside %llu..%llu\n", path, v, f->min, f->max);
        CHECK(v >= f->min && v <= f->max && f->min <= f->max);
    }
    cs_config_t one;
    char err[256] = "";
    memset(&one, 0, sizeof(one));
    cs_cfg_ctx_t ctx = {.err = err, .errlen = sizeof(err)};
    json_t *v = json_loads(f->def != NULL ? f->def : "null", JSON_DECODE_ANY, NULL);
    REQUIRE(v != NULL);
    int rc = cs_cfg_parse_field(&one, f, v, &ctx);
    if (rc != 0)
        fprintf(stderr, "   %s: default %s refused: %s\n", path, f->def, err);
    CHECK(rc == 0);
    json_decref(v);
    cs_cfg_release_field(&one, f);
    /* A kind stored by its ops alone must say how to print it; one with storage, how to copy and free it. */
    if (f->kind == CS_CFG_CUSTOM || f->kind == CS_CFG_INT)
        CHECK(f->ops != NULL && f->ops->parse != NULL &&
              (f->ops->dump != NULL || (f->flags & CS_CFG_NODUMP)));
    if (f->kind == CS_CFG_CUSTOM && f->ops->copy != NULL)
        CHECK(f->ops->release != NULL);
    /* A restart-only key is compared by its printed value: it cannot be a secret. */
    if (f->reload == CS_CFG_RESTART)
        CHECK(f->kind != CS_CFG_SECRET && !(f->flags & CS_CFG_NODUMP));
    if (f->reload == CS_CFG_APPLY)
        CHECK(f->apply > 0 && f->apply < CS_CONFIG_APPLY_MAX);
    else
        CHECK(f->apply == 0);
    /* Only a secret may come from the environment. */
    if (f->env != NULL)
        CHECK(f->kind == CS_CFG_SECRET);
}

static void test_table_rows(void)
{
    each_row(cfg_root_fields, "", check_row, NULL);
    /* The rows of one token (auth.c) obey the same rules, but for required keys, which have none. */
    for (const cs_cfg_field_t *f = cs_tok_token_fields; f->key != NULL; f++)
        if (f->def != NULL)
            check_row(f, f->key, NULL);
}

/* What --check-config prints for the defaults reads back to the same configuration, over any other. */
static void test_table_dump_roundtrip(void)
{
    cs_config_t def, other;
    char err[512] = "";

    REQUIRE(cs_config_defaults(&def) == 0);
    char *want = dump_str(&def);
    REQUIRE(cs_config_defaults(&other) == 0);
    REQUIRE(cs_config_load_buffer(&other, full_json, strlen(full_json), err, sizeof(err)) == 0);
    /* The secrets print as "(set)", which is refused as a value: clear them, the dump prints null. */
    static const char nosecrets[] = "{\"auth\":{\"api_key\":null,\"jwt_secret\":null}}";
    REQUIRE(cs_config_load_buffer(&other, nosecrets, strlen(nosecrets), err, sizeof(err)) == 0);
    int rc = cs_config_load_buffer(&other, want, strlen(want), err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "   %s\n", err);
    CHECK(rc == 0);
    char *got = dump_str(&other);
    CHECK_STR(got, want);
    free(got);
    /* A copy prints the same and owns its own storage. */
    cs_config_t copy;
    REQUIRE(cfg_copy(&copy, &other) == 0);
    cs_config_free(&other);
    got = dump_str(&copy);
    CHECK_STR(got, want);
    free(got);
    cs_config_free(&copy);
    free(want);
    cs_config_free(&def);
}

/* What each key does on SIGHUP, as docs/operations.md and docs/configuration.md state it. */
static const struct {
    const char *path;
    cs_cfg_reload_t how;
    int apply;
} reload_rules[] = {
    {"listen", CS_CFG_RESTART, 0},
    {"ingest.socket", CS_CFG_RESTART, 0},
    {"ingest.mode", CS_CFG_RESTART, 0},
    {"ingest.allow_uids", CS_CFG_LIVE, 0},
    {"auth.api_key", CS_CFG_APPLY, CS_CONFIG_APPLY_AUTH},
    {"auth.tokens", CS_CFG_APPLY, CS_CONFIG_APPLY_AUTH},
    {"auth.jwt_secret", CS_CFG_APPLY, CS_CONFIG_APPLY_AUTH},
    {"store.ring_events", CS_CFG_APPLY, CS_CONFIG_APPLY_STORE},
    {"store.ring_bytes", CS_CFG_APPLY, CS_CONFIG_APPLY_STORE},
    {"store.max_bytes", CS_CFG_APPLY, CS_CONFIG_APPLY_STORE},
    {"store.retain_s", CS_CFG_APPLY, CS_CONFIG_APPLY_STORE},
    {"store.global_events", CS_CFG_RESTART, 0},
    {"limits.max_clients", CS_CFG_LIVE, 0},
    {"limits.max_producers", CS_CFG_LIVE, 0},
    {"limits.max_event_bytes", CS_CFG_LIVE, 0},
    {"limits.head_bytes", CS_CFG_LIVE, 0},
    {"limits.head_timeout_s", CS_CFG_LIVE, 0},
    {"limits.stall_s", CS_CFG_LIVE, 0},
    {"limits.json_depth", CS_CFG_LIVE, 0},
    {"limits.max_body_bytes", CS_CFG_LIVE, 0},
    {"heartbeat_s", CS_CFG_LIVE, 0},
    {"shutdown_s", CS_CFG_LIVE, 0},
    {"http.cors_origins", CS_CFG_LIVE, 0},
    {"http.metrics_public", CS_CFG_LIVE, 0},
    {"webhooks.endpoints", CS_CFG_RESTART, 0},
    {"webhooks.allow", CS_CFG_LIVE, 0},
    {"webhooks.max_attempts", CS_CFG_LIVE, 0},
    {"webhooks.connect_timeout_s", CS_CFG_LIVE, 0},
    {"webhooks.timeout_s", CS_CFG_LIVE, 0},
    {"webhooks.max_in_flight", CS_CFG_LIVE, 0},
    {"webhooks.max_executions", CS_CFG_LIVE, 0},
    {"webhooks.max_registrations", CS_CFG_LIVE, 0},
    {"webhooks.busy_share", CS_CFG_LIVE, 0},
    {"log.level", CS_CFG_APPLY, CS_CONFIG_APPLY_LOG},
    {"journal.dir", CS_CFG_RESTART, 0},
    {"journal.fsync", CS_CFG_RESTART, 0},
    {"journal.max_bytes", CS_CFG_RESTART, 0},
    {"gateway.default_crew", CS_CFG_LIVE, 0},
    {"gateway.ack_timeout_s", CS_CFG_LIVE, 0},
    {"gateway.queue", CS_CFG_LIVE, 0},
    {"gateway.queue_timeout_s", CS_CFG_LIVE, 0},
    {"cluster.redis", CS_CFG_RESTART, 0},
    {"cluster.node", CS_CFG_RESTART, 0},
    {"cluster.prefix", CS_CFG_RESTART, 0},
};

static void check_rule(const cs_cfg_field_t *f, const char *path, void *arg)
{
    size_t *seen = arg;
    size_t i;
    for (i = 0; i < sizeof(reload_rules) / sizeof(reload_rules[0]); i++)
        if (strcmp(reload_rules[i].path, path) == 0)
            break;
    if (i == sizeof(reload_rules) / sizeof(reload_rules[0])) {
        fprintf(stderr, "   %s: no reload rule in this test (and the docs?)\n", path);
        CHECK(0);
        return;
    }
    (*seen)++;
    if (f->reload != reload_rules[i].how || f->apply != reload_rules[i].apply)
        fprintf(stderr, "   %s: the table says %d/%d\n", path, (int)f->reload, f->apply);
    CHECK(f->reload == reload_rules[i].how && f->apply == reload_rules[i].apply);
}

static void test_table_reload(void)
{
    size_t seen = 0;
    each_row(cfg_root_fields, "", check_rule, &seen);
    CHECK(seen == sizeof(reload_rules) / sizeof(reload_rules[0]));

    /* The plan: restart-only changes named and set back, the rest kept, every apply function named. */
    cs_config_t running, next;
    cs_config_reload_plan_t plan;
    char err[512];
    static const char changed[] =
        "{\"listen\":\"127.0.0.1:9001\",\"ingest\":{\"socket\":\"/tmp/new.sock\",\"mode\":\"0600\"},"
        "\"store\":{\"ring_events\":5,\"global_events\":9},\"limits\":{\"max_clients\":7},"
        "\"auth\":{\"api_key\":\"k\"},\"log\":{\"level\":\"debug\"}}";
    REQUIRE(cs_config_defaults(&running) == 0);
    REQUIRE(cs_config_defaults(&next) == 0);
    REQUIRE(cs_config_reload_plan(&next, &running, &plan) == 0);
    CHECK_STR(plan.restart, "");
    CHECK(plan.n_restart == 0);
    CHECK(plan.apply ==
          (1u << CS_CONFIG_APPLY_AUTH | 1u << CS_CONFIG_APPLY_STORE | 1u << CS_CONFIG_APPLY_LOG));
    REQUIRE(cs_config_load_buffer(&next, changed, strlen(changed), err, sizeof(err)) == 0);
    REQUIRE(cs_config_reload_plan(&next, &running, &plan) == 0);
    CHECK_STR(plan.restart, "listen, ingest.socket, ingest.mode and store.global_events");
    CHECK(plan.n_restart == 4);
    CHECK_STR(next.listen, running.listen);
    CHECK_STR(next.listen_host, "127.0.0.1");
    CHECK(next.listen_port == 8000);
    CHECK_STR(next.ingest_socket, running.ingest_socket);
    CHECK(next.ingest_mode == 0660 && next.global_events == 4096);
    CHECK(next.ring_events == 5 && next.max_clients == 7 && next.log_level == CS_LOG_DEBUG);
    CHECK_STR(next.api_key, "k");
    /* Two changes read "a and b". */
    static const char two[] = "{\"listen\":\"127.0.0.1:9002\",\"ingest\":{\"socket\":\"/tmp/b.sock\"}}";
    REQUIRE(cs_config_load_buffer(&next, two, strlen(two), err, sizeof(err)) == 0);
    REQUIRE(cs_config_reload_plan(&next, &running, &plan) == 0);
    CHECK_STR(plan.restart, "listen and ingest.socket");
    cs_config_free(&next);
    cs_config_free(&running);
}

/* docs/configuration.md shows each key's default as the table holds it (in the key's own table line). */
static void check_doc_default(const cs_cfg_field_t *f, const char *path, void *arg)
{
    const char *doc = arg;
    char needle[160], want[160];
    snprintf(needle, sizeof(needle), "\n| `%s` |", path);
    snprintf(want, sizeof(want), "`%s`", f->def);
    const char *line = strstr(doc, needle);
    if (line == NULL && strchr(path, '.') == NULL) {
        /* A top-level key with a section of its own ("### `listen`"): its table follows the heading. */
        snprintf(needle, sizeof(needle), "### `%s`", path);
        line = strstr(doc, needle);
        if (line != NULL)
            line = strstr(line, "\n|---");
        if (line != NULL)
            line = strchr(line + 1, '\n');
    }
    const char *end = line != NULL ? strchr(line + 1, '\n') : NULL;
    int ok = line != NULL && end != NULL;
    if (ok) {
        const char *hit = strstr(line, want);
        ok = hit != NULL && hit < end;
    }
    if (!ok)
        fprintf(stderr, "   docs/configuration.md: %s does not show the default %s\n", path, want);
    CHECK(ok);
}

static void test_table_docs(void)
{
    char path[4096];
    const char *src = getenv("CS_SOURCE_DIR");

    if (src != NULL && src[0] != '\0')
        snprintf(path, sizeof(path), "%s/docs/configuration.md", src);
    else if (__FILE__[0] == '/' && strstr(__FILE__, "/tests/unit/") != NULL)
        snprintf(path, sizeof(path), "%.*s/docs/configuration.md",
                 (int)(strstr(__FILE__, "/tests/unit/") - __FILE__), __FILE__);
    else {
        fprintf(stderr, "   skipped docs/configuration.md: set CS_SOURCE_DIR to the source tree\n");
        return;
    }
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    each_row(cfg_root_fields, "", check_doc_default, doc);
}

/* cluster.*: off by default; a Redis address is "unix:/abs" or "redis://host:port"; names are checked. */
static void test_cluster(void)
{
    cs_config_t cfg;
    char err[512], buf[512];
    static const char *const good[] = {"unix:/run/redis/redis.sock", "redis://127.0.0.1:6379",
                                       "redis://redis.example.com:7000", "redis://[::1]:6379"};
    static const char *const bad[] = {"unix:relative.sock", "redis://127.0.0.1",  "redis://h:0",
                                      "redis://h:70000",    "redis://u:p@h:6379", "redis://h:6379/0",
                                      "tcp://h:6379",       "redis://h:6379 ",    "unix:"};

    REQUIRE(cs_config_defaults(&cfg) == 0);
    CHECK(cfg.cluster_redis == NULL && cfg.cluster_node == NULL);
    CHECK_STR(cfg.cluster_prefix, "cs:");
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(buf, sizeof(buf), "{\"cluster\":{\"redis\":\"%s\",\"node\":\"n-1\",\"prefix\":\"x:\"}}",
                 good[i]);
        CHECK(cs_config_load_buffer(&cfg, buf, strlen(buf), err, sizeof(err)) == 0);
        CHECK_STR(cfg.cluster_redis, good[i]);
        CHECK_STR(cfg.cluster_node, "n-1");
        CHECK_STR(cfg.cluster_prefix, "x:");
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(buf, sizeof(buf), "{\"cluster\":{\"redis\":\"%s\"}}", bad[i]);
        CHECK(cs_config_load_buffer(&cfg, buf, strlen(buf), err, sizeof(err)) == -EINVAL);
        CHECK(strstr(err, "cluster.redis") != NULL);
    }
    snprintf(buf, sizeof(buf), "{\"cluster\":{\"node\":\"a b\"}}");
    CHECK(cs_config_load_buffer(&cfg, buf, strlen(buf), err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "cluster.node") != NULL);
    cs_config_free(&cfg);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cs-test-config.XXXXXX");
    REQUIRE(mkdtemp(tmpdir) != NULL);
    /* The tests below set the secrets themselves; ones inherited from the caller would skew them. */
    unsetenv("CREWSTREAM_API_KEY");
    unsetenv("CREWSTREAM_JWT_SECRET");
    /* Under a systemd unit with RuntimeDirectory= the default socket would move (test_default_socket). */
    unsetenv("RUNTIME_DIRECTORY");
    /* Likewise the journal's directory with StateDirectory= (test_default_journal_dir). */
    unsetenv("STATE_DIRECTORY");

    RUN(test_defaults);
    RUN(test_default_socket);
    RUN(test_default_journal_dir);
    RUN(test_default_files);
    RUN(test_full);
    RUN(test_token_hash);
    RUN(test_errors);
    RUN(test_error_exact);
    RUN(test_merge_and_rollback);
    RUN(test_dump);
    RUN(test_parse_listen);
    RUN(test_apply_env);
    RUN(test_table_rows);
    RUN(test_table_dump_roundtrip);
    RUN(test_table_reload);
    RUN(test_table_docs);
    RUN(test_cluster);

    static const char *const files[] = {"config.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", tmpdir, files[i]);
        unlink(p);
    }
    rmdir(tmpdir);
    CT_DONE();
}
