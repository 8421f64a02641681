/* serve: the `hearth serve` command (see serve.h for the parts).
 *
 * Start order: the listening socket first (a port in use fails at once, and
 * /health answers 503 while the model loads), then the engine thread, which
 * opens the engine (the multi-process runtime by default, as `hearth run`).
 * SIGINT/SIGTERM or a failed load wake the main thread through a pipe; it
 * stops the engine thread (the requests still running get a 503 error),
 * then the HTTP server, and the engine's workers are shut down with it. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netdb.h>

#include "cli.h"
#include "log.h"
#include "serve.h"
#include "sha256.h"

static int g_wake_fd = -1;
static volatile sig_atomic_t g_stop;

static void on_stop_signal(int sig) {
    (void)sig;
    g_stop = 1;
    if (g_wake_fd >= 0 && write(g_wake_fd, "s", 1) < 0) { /* nothing to do in a handler */
    }
}

/* Called at start and again by the engine thread once the runtime (which
 * installs handlers of its own) is up. */
void serve_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* 1 when every address the host name resolves to is a loopback one. */
static int host_is_loopback(const char *host) {
    struct addrinfo hints = {0}, *ai = NULL, *p;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0) return 0;
    int all = ai != NULL;
    for (p = ai; p; p = p->ai_next) {
        if (p->ai_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)p->ai_addr;
            if ((ntohl(a->sin_addr.s_addr) >> 24) != 127) all = 0;
        } else if (p->ai_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)p->ai_addr;
            if (!IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) all = 0;
        } else {
            all = 0;
        }
    }
    freeaddrinfo(ai);
    return all;
}

/* The key from --api-key-file: the first line, surrounding white space removed. */
static char *read_key_file(const char *path, char *err, size_t errlen) {
    size_t len = 0;
    char *k = cli_read_file(path, &len, err, errlen);
    if (!k) return NULL;
    char *nl = strpbrk(k, "\r\n");
    if (nl) *nl = '\0';
    size_t n = strlen(k);
    while (n && isspace((unsigned char)k[n - 1])) k[--n] = '\0';
    size_t lead = strspn(k, " \t");
    memmove(k, k + lead, n - lead + 1);
    if (!*k) {
        snprintf(err, errlen, "--api-key-file %s: the file holds no key", path);
        free(k);
        return NULL;
    }
    return k;
}

int cmd_serve(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_GEN | CLI_RUNTIME | CLI_SERVE, "serve") != 0) return 1;
    if (o.chat) return cli_fail("serve: --chat is not an option of serve (chat requests use the chat template)");
    char err[1024];
    static struct serve srv; /* large (metrics); one per process */
    struct serve *s = &srv;
    memset(s, 0, sizeof *s);
    s->o.host = o.serve_host;
    s->o.port = o.serve_port;
    s->o.alias = o.alias;
    s->o.queue_max = o.serve_queue;
    s->o.timeout_s = o.serve_timeout;
    /* max_tokens when a request has none: -n if given, else until the end of the answer (llama-server's -1) */
    s->o.default_max_tokens = -1;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--n-predict")) s->o.default_max_tokens = o.n_predict;
    s->o.sp = o.sp;
    s->o.eng = o.eng;
    if (s->o.eng.n_seq <= 0) s->o.eng.n_seq = 1;

    char *key = NULL;
    if (o.api_key && o.api_key_file) return cli_fail("serve: give --api-key or --api-key-file, not both");
    if (o.api_key_file) {
        if (!(key = read_key_file(o.api_key_file, err, sizeof err))) return cli_fail(err);
    } else if (o.api_key) {
        key = strdup(o.api_key);
    } else if (getenv("HEARTH_API_KEY") && *getenv("HEARTH_API_KEY")) {
        key = strdup(getenv("HEARTH_API_KEY")); /* keeps the key out of the process list */
    }
    if (key) {
        sha256_buf(key, strlen(key), s->key_hash);
        s->has_key = 1;
        memset(key, 0, strlen(key));
        free(key);
    }
    if (!host_is_loopback(s->o.host) && !s->has_key)
        log_warn("listening on %s, which is not a loopback address, without an API key: anyone who can reach this "
                 "port can use the model (give --api-key-file FILE)",
                 s->o.host);

    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    s->m.started = (double)time(NULL);
    if (pipe(s->wake_fd) != 0) return cli_fail("cannot create a pipe");
    g_wake_fd = s->wake_fd[1];
    serve_signals_install();

    struct MHD_Daemon *d = serve_http_start(s, err, sizeof err);
    if (!d) return cli_fail(err);
    log_info("listening on http://%s%s%s:%d/ (loading the model; /health answers 503 until it is ready)",
             strchr(s->o.host, ':') ? "[" : "", s->o.host, strchr(s->o.host, ':') ? "]" : "", s->o.port);
    /* a line for scripts and tests, on stderr as every log */
    fprintf(stderr, "hearth serve: port %d\n", s->o.port);
    if (serve_engine_start(s) != 0) {
        serve_http_stop(d);
        return cli_fail("cannot start the engine thread");
    }
    for (;;) {
        char c;
        ssize_t r = read(s->wake_fd[0], &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (g_stop || atomic_load(&s->failed) || r <= 0) break;
    }
    int rc = 0;
    if (atomic_load(&s->failed)) {
        rc = 1;
        log_error("cannot load the model: %s", s->load_err);
    } else {
        log_info("stopping");
    }
    serve_engine_stop(s); /* every job ends (503 for those still running) */
    serve_http_stop(d);   /* every connection ends */
    if (atomic_load(&s->loaded)) engine_close(&s->e);
    free(s->active);
    g_wake_fd = -1;
    close(s->wake_fd[0]);
    close(s->wake_fd[1]);
    if (rc) return cli_fail(s->load_err);
    return 0;
}

const char cli_serve_help[] =
    "usage: hearth serve [-m FILE] [--host 127.0.0.1] [--port 8080] [-np N] [-c N] [--api-key-file F] [options]\n"
    "\n"
    "An OpenAI-compatible HTTP server (docs/serve.md): POST /v1/chat/completions (the messages rendered by the\n"
    "model's chat template), POST /v1/completions, GET /v1/models, GET /health (503 while loading), GET /metrics\n"
    "(Prometheus), GET /props, POST /tokenize, POST /detokenize, and a chat page at /. Answers stream as SSE\n"
    "with \"stream\": true. Up to -np requests decode together in one batch; --queue more wait for a slot,\n"
    "beyond that a request gets 503. A client that disconnects frees its slot at the next token.\n"
    "It runs through the multi-process runtime, as `hearth run` (--single-process: the dense in-process pass).\n"
    "\n"
    "      --host ADDR         address to listen on (default 127.0.0.1; a warning when it is not loopback\n"
    "                          and no key is set)\n"
    "      --port N            TCP port (default 8080; 0: any free port, printed as 'hearth serve: port N')\n"
    "  -np, --parallel N       sequences decoded together, each with a KV cache of -c tokens (default 1)\n"
    "      --queue N           requests that may wait for a sequence beyond the running ones (default 64)\n"
    "      --timeout S         seconds a request may take from arrival to its last token (default 600)\n"
    "      --api-key KEY       require 'Authorization: Bearer KEY' on every endpoint but /health and the page\n"
    "      --api-key-file F    the same, the key read from the first line of F (keeps it out of `ps`;\n"
    "                          HEARTH_API_KEY in the environment works too)\n"
    "      --alias NAME        the model's name in /v1/models and answers (default: the file name)\n"
    "  -n, --n-predict N       max_tokens when a request gives none (default: until the end of the answer)\n"
    "      --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n, -s\n"
    "                          sampling defaults for requests that do not set them\n"
    "Takes the runtime and KV cache options of `hearth run` (-c -t -b --single-process --cpu-workers --pin\n"
    "--gpu-backend --hot-fraction --sidecar --kv-*). A request names no file: the model, sidecar and\n"
    "settings are the server's.\n";
