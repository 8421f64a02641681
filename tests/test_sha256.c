/* sha256_unit: SHA-256 against FIPS 180-4's examples, against digests produced by
 * Python's hashlib for pseudo-random messages of awkward lengths, streaming in
 * random pieces against one-shot, and sha256_file on a temporary file, a missing
 * file and (when present) the default model.
 *
 *   test_sha256 [MODEL]     MODEL defaults to $HEARTH_TEST_MODEL, else
 *                           ~/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf
 */
#include "sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);         \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            failures++;                                                  \
        }                                                                \
    } while (0)

static const char *hex_of_buf(const void *p, size_t n, char hex[SHA256_HEX_SIZE]) {
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_buf(p, n, d);
    return sha256_hex(d, hex);
}

/* The message generator the Python side used for the hashlib digests below:
 *   x = x * 6364136223846793005 + 1442695040888963407 (mod 2^64); byte = x >> 56 */
static void lcg_bytes(uint64_t seed, uint8_t *out, size_t n) {
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = (uint8_t)(x >> 56);
    }
}

static void test_fips(void) {
    static const struct { const char *msg; const char *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[SHA256_HEX_SIZE];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        hex_of_buf(v[i].msg, strlen(v[i].msg), hex);
        CHECK(strcmp(hex, v[i].hex) == 0, "FIPS vector %zu (%zu bytes): got %s want %s", i, strlen(v[i].msg), hex,
              v[i].hex);
    }
    /* one million 'a', fed in pieces of 1000 as FIPS's example suggests */
    char a[1000];
    memset(a, 'a', sizeof a);
    struct sha256_ctx c;
    sha256_init(&c);
    for (int i = 0; i < 1000; i++)
        sha256_update(&c, a, sizeof a);
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_final(&c, d);
    sha256_hex(d, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
          "one million 'a': got %s", hex);
}

/* Digests from Python: hashlib.sha256(lcg_bytes(20240611, 300)[:L]).hexdigest(). */
#define LCG_SEED 20240611ULL
static const struct { size_t len; const char *hex; } hashlib_vectors[] = {
    {0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {1, "4ae81572f06e1b88fd5ced7a1a000945432e83e1551e6f721ee9c00b8cc33260"},
    {3, "2098fb1b109282a68b6fb38b7ff78c620be8612af10e02dbaa861b7a4883d956"},
    {31, "44c88289710775e24d635e8f8f16d07acbf3872c01a0d4305f262361374cd77f"},
    {32, "8759df6b49eac65479ac3cdc5d05b8bff94a47fcb117d7754838a05c0afe62e7"},
    {55, "a37fb7f8c28e4948279e9fab5f644cec6d3aff05497e28bcf8598d6bd38358f3"},
    {56, "1470a5bcbc50e273895158446b1591d6dc30369061bb41cd1643ada63b7d3f07"},
    {57, "8cdad6a3bab7e596d0ea8ac72199f278ca1d57f1991d7f4b6ab31ab7c9cba870"},
    {63, "5fb877cd1f01c4ab73fd6430875a0e111e58726e5088b27891815728e47784fb"},
    {64, "619d2b24299e995d8a711d2b2af4d2165d27c409463cbfb6fbd1bea99121f539"},
    {65, "cbd294ac63979265054fe14828d2e7a2922a4e630544c0f2fa33713afe5429cb"},
    {100, "953fc2ec9bc9698ecf07c1e87489e29533e846a6730c092d1d3ac0da1bcaa816"},
    {111, "72e4ff595efd84beda13ffa6455c103d3cd21551d0e5793f47c0084a367fa1a4"},
    {119, "5726b21b22cd4828b4ca440271cdd0b16f4c8b88704af5a29eaad272d04cac24"},
    {120, "2dc47ecccb473a8f8ad023af23ed648279bb91fc6e0a7d2e739e0ca989d8f64b"},
    {121, "9659e7214895e76ccdc53120df4c433051efb2f71c29efb655c76b07910e7fa3"},
    {127, "0125ad8f31926549c420e01d5f6039b6974e9740a48ba2b959a9dca0c58de43d"},
    {128, "7941d8cad7f0720e231a8fef2b060d0c0b6d01c65a4c4c0639776e683c3f261e"},
    {129, "274883e7e7f53a2311ca7b9af98fb383f35b19b8559bc384b758679f8b1b68d7"},
    {183, "107b728cf889789dd3e22a002abb003ce79815fb215a27cb3f0b0f7ce3997f93"},
    {191, "70ee1e803c48ead125a88612d245afda317c2c05ecdd51983f09ff8d1f93d1d3"},
    {192, "5cf205be67832880de0adfd28462658028b533778ba859dbd3c2d5d07916c93f"},
    {255, "63090a31ab0002bf4b15e54cd77e5cc2b9c659428221bd2eca435314f19d5915"},
    {256, "fdd05e81ef2e471e0fa3309f41e8cd393a63ceae71688979e8a3b82170d70992"},
    {257, "64658ea0f79540de9bd3bb4bc60541fc23f48e9bee6d4920bc55f3dfaac15ff9"},
    {299, "469b7bccadf62c0d229b3e24359699bf1201ef348c02523ab5834cc105ea5b29"},
    {300, "c8e68305372f5f59f34cbdc4c1144404ea969085757af34963d84071fd660343"},
};
/* sha256 of the concatenated raw digests of every prefix length 0..300 (hashlib). */
static const char *hashlib_all_prefixes = "5cee7a702f69cee05b12916a6f6290cc13c9faa23fcad848a4fc7bdf818bfebe";

static void test_hashlib(void) {
    uint8_t msg[300];
    char hex[SHA256_HEX_SIZE];
    lcg_bytes(LCG_SEED, msg, sizeof msg);
    printf("hashlib vectors: LCG seed %llu\n", (unsigned long long)LCG_SEED);
    for (size_t i = 0; i < sizeof hashlib_vectors / sizeof hashlib_vectors[0]; i++) {
        hex_of_buf(msg, hashlib_vectors[i].len, hex);
        CHECK(strcmp(hex, hashlib_vectors[i].hex) == 0, "hashlib length %zu: got %s want %s",
              hashlib_vectors[i].len, hex, hashlib_vectors[i].hex);
    }
    struct sha256_ctx all;
    sha256_init(&all);
    for (size_t len = 0; len <= sizeof msg; len++) {
        uint8_t d[SHA256_DIGEST_SIZE];
        sha256_buf(msg, len, d);
        sha256_update(&all, d, sizeof d);
    }
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_final(&all, d);
    sha256_hex(d, hex);
    CHECK(strcmp(hex, hashlib_all_prefixes) == 0, "digest of all prefix digests 0..300: got %s want %s", hex,
          hashlib_all_prefixes);
}

/* Feeding a message in random pieces (including empty ones) equals one shot. */
static void test_streaming(void) {
    enum { N = 5000 };
    uint64_t x = 7; /* seed of the lengths' LCG (the message has its own) */
    printf("streaming: seed %llu\n", (unsigned long long)x);
    uint8_t *msg = malloc(N);
    if (!msg) {
        CHECK(0, "out of memory");
        return;
    }
    lcg_bytes(99, msg, N);
    for (int trial = 0; trial < 50; trial++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t len = (size_t)((x >> 33) % N);
        uint8_t want[SHA256_DIGEST_SIZE], got[SHA256_DIGEST_SIZE];
        sha256_buf(msg, len, want);
        struct sha256_ctx c;
        sha256_init(&c);
        size_t off = 0;
        while (off < len) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t piece = (size_t)((x >> 33) % 150); /* 0..149: empty, sub-block, multi-block */
            if (piece > len - off)
                piece = len - off;
            sha256_update(&c, msg + off, piece);
            off += piece;
        }
        sha256_final(&c, got);
        CHECK(memcmp(want, got, sizeof want) == 0, "streaming trial %d (length %zu) differs from one-shot", trial,
              len);
    }
    free(msg);
}

static void test_file(void) {
    char path[] = "/tmp/hearth-sha256-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp failed");
    if (fd < 0)
        return;
    /* 2.5 MiB + 3 bytes of 'a': crosses the 1 MiB read chunks at awkward offsets */
    size_t n = (5u << 19) + 3;
    char *buf = malloc(n);
    if (!buf) {
        CHECK(0, "out of memory");
        close(fd);
        unlink(path);
        return;
    }
    memset(buf, 'a', n);
    CHECK(write(fd, buf, n) == (ssize_t)n, "write %s failed", path);
    close(fd);
    uint8_t want[SHA256_DIGEST_SIZE], got[SHA256_DIGEST_SIZE];
    char err[256] = "";
    sha256_buf(buf, n, want);
    CHECK(sha256_file(path, got, err, sizeof err) == 0, "sha256_file(%s): %s", path, err);
    CHECK(memcmp(want, got, sizeof want) == 0, "sha256_file differs from sha256_buf on %zu bytes", n);
    unlink(path);
    free(buf);

    err[0] = '\0';
    CHECK(sha256_file("/nonexistent/hearth/file", got, err, sizeof err) < 0, "missing file accepted");
    CHECK(strstr(err, "/nonexistent/hearth/file") != NULL, "error does not name the path: '%s'", err);
    printf("missing file: %s\n", err);
    err[0] = '\0';
    CHECK(sha256_file("/tmp", got, err, sizeof err) < 0, "a directory was hashed");
    printf("directory: %s\n", err);
}

static void test_model(const char *path) {
    static const char *want = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    if (access(path, R_OK) != 0) {
        printf("model %s absent: its checksum test skipped\n", path);
        return;
    }
    uint8_t d[SHA256_DIGEST_SIZE];
    char hex[SHA256_HEX_SIZE], err[256] = "";
    int rc = sha256_file(path, d, err, sizeof err);
    CHECK(rc == 0, "sha256_file(model): %s", err);
    if (rc == 0) {
        sha256_hex(d, hex);
        CHECK(strcmp(hex, want) == 0, "model %s: got %s want %s", path, hex, want);
        printf("model %s: %s\n", path, hex);
    }
}

int main(int argc, char **argv) {
    char model[4096];
    const char *env = getenv("HEARTH_TEST_MODEL");
    if (argc > 1) {
        snprintf(model, sizeof model, "%s", argv[1]);
    } else if (env && env[0]) {
        snprintf(model, sizeof model, "%s", env);
    } else {
        const char *home = getenv("HOME");
        snprintf(model, sizeof model, "%s/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "");
    }
    test_fips();
    test_hashlib();
    test_streaming();
    test_file();
    test_model(model);
    if (failures) {
        printf("sha256_unit: %d FAILED\n", failures);
        return 1;
    }
    printf("sha256_unit: all passed\n");
    return 0;
}
