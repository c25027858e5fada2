#!/usr/bin/env bash
# Builds the Function App package the way the deploy workflow does (scripts/package.sh, here with
# the example config) and checks that it has what the Functions host needs: every entry, the
# modes, a static binary that answers readiness and an event when started from the package's own
# folder, and a config whose referenced files (`check-config --list-files`) are all inside.
# Kept out of `cargo test` (a musl release build takes minutes); `.ci/run` runs it after the tests.
#
#   scripts/check-package.sh [--out DIR]
#
# DIR (default: a temporary folder, removed at the end) receives aml-autodeploy.zip.
set -euo pipefail
cd "$(dirname "$0")/.."

out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "check-package.sh: unknown argument $1 (usage: scripts/check-package.sh [--out DIR])" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="${out:-$work/dist}"

if ! scripts/package.sh --config examples/autodeploy.yml --out "$out"; then
  echo "check-package.sh: ERROR: scripts/package.sh failed (its output is above); on a machine where the" \
    "x86_64-unknown-linux-musl target or musl-tools cannot be installed the package cannot be built, and this check fails on purpose" >&2
  exit 1
fi

python3 - "$out/aml-autodeploy.zip" "$work/extracted" <<'PY'
import http.client, json, os, socket, stat, subprocess, sys, time, zipfile

zip_path, extracted = sys.argv[1:]
failures = []
def check(ok, what):
    if not ok:
        failures.append(what)
def done():
    if failures:
        for f in failures:
            print(f"check-package.sh: ERROR: {f}", file=sys.stderr)
        sys.exit(1)

# The layout the host needs, with the example config and the files it refers to.
z = zipfile.ZipFile(zip_path)
modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
names = sorted(modes)
for required in ["host.json", "ModelRegistered/function.json", "Reconcile/function.json",
                 "aml-autodeploy", "autodeploy.yml", "deployments/churn.yml", "requests/churn.json",
                 # the code folder and the conda file of the az ml YAML, at their relative paths
                 "deployments/scripts/score.py", "deployments/environments/churn-env.yml"]:
    check(required in modes, f"{required} missing from {names}")
check(modes.get("aml-autodeploy") == 0o755, f"aml-autodeploy has mode {oct(modes.get('aml-autodeploy', 0))}, expected 0o755")
check(modes.get("host.json") == 0o644, f"host.json has mode {oct(modes.get('host.json', 0))}, expected 0o644")
check(not any("local.settings" in n or n.startswith("src/") for n in names), f"development files packaged: {names}")
done()

# Extracted as the platform does: the binary is static and keeps its mode.
z.extractall(extracted)
binary = os.path.join(extracted, "aml-autodeploy")
os.chmod(binary, 0o755)  # zipfile does not restore modes; the check above covers the zip's
ldd = subprocess.run(["ldd", binary], capture_output=True, text=True)
check("=>" not in ldd.stdout, f"not static: {ldd.stdout}")

# The packaged config is valid where it lies, and every file it refers to is in the package.
clean_env = {"PATH": os.environ.get("PATH", ""), "AUTODEPLOY_LOG_FORMAT": "json"}
listed = subprocess.run([binary, "check-config", "--config", "autodeploy.yml", "--list-files"],
                        cwd=extracted, env=clean_env, capture_output=True, text=True, timeout=30)
check(listed.returncode == 0, f"check-config --list-files failed: {listed.stdout}{listed.stderr}")
files = listed.stdout.split()
check(files, "check-config --list-files lists no file; the example config refers to some")
for f in files:
    check(f in modes, f"{f} (referenced by autodeploy.yml) is not in the package")
done()

# Started like the host starts it: from the app root, with FUNCTIONS_CUSTOMHANDLER_PORT; the host
# polls GET / every 25 ms, then POSTs the envelope chunked.
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
env = dict(clean_env, FUNCTIONS_CUSTOMHANDLER_PORT=str(port), FUNCTIONS_CUSTOMHANDLER_WORKER_ID="check-package")
handler = subprocess.Popen([binary], cwd=extracted, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
try:
    started = time.monotonic()
    ready_after = None
    while time.monotonic() - started < 15 and handler.poll() is None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/")
            c.getresponse().read()
            ready_after = time.monotonic() - started
            break
        except OSError:
            time.sleep(0.025)
    check(ready_after is not None, f"the packaged handler never answered GET / (exit status {handler.poll()})")
    check(ready_after is None or ready_after < 5, f"ready after {ready_after:.1f} s; the host allows less")
    if ready_after is not None:
        ws = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws"
        event = {
            "id": "evt-nobody-1", "topic": ws, "subject": "models/nobody:1",
            "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
            "eventTime": "2026-11-26T10:00:00Z",
            "data": {"modelName": "nobody", "modelVersion": "1", "modelTags": {}, "modelProperties": {}},
            "dataVersion": "2", "metadataVersion": "1",
        }
        body = json.dumps({
            "Data": {"eventGridEvent": event},
            "Metadata": {"data": event["data"], "sys": {"MethodName": "ModelRegistered", "UtcNow": "2026-11-26T10:00:01Z", "RandGuid": "0f8fad5b-d9cb-469f-a165-70867728950e"}},
        }).encode()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("POST", "/ModelRegistered", body=iter([body[: len(body) // 2], body[len(body) // 2 :]]),
                  headers={"Content-Type": "application/json; charset=utf-8",
                           "X-Azure-Functions-InvocationId": "11111111-2222-3333-4444-555555555555"},
                  encode_chunked=True)
        reply = c.getresponse()
        raw = reply.read().decode(errors="replace")
        check(reply.status == 200, f"the packaged handler answered {reply.status}: {raw}")
finally:
    handler.kill()
    output = handler.communicate()[0].decode(errors="replace")
if failures:
    print(output, file=sys.stderr)
done()
print(f"check-package.sh: {zip_path}: {len(names)} entries, static binary, ready after {ready_after * 1000:.0f} ms, config files {files}: ok")
PY
