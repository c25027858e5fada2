#!/usr/bin/env bash
# Builds the Function App package: dist/aml-autodeploy.zip with host.json, every function folder, the
# static (musl) release binary at the root under the name host.json points to (mode 0755 in the zip),
# and the config file plus every file it references. Then checks its own output.
#
#   scripts/package.sh [--config FILE] [--out DIR]
#
# FILE defaults to $AUTODEPLOY_CONFIG, else autodeploy.yml. The config is packaged as autodeploy.yml
# (the handler's default AUTODEPLOY_CONFIG); the files it references keep their paths relative to it.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package.sh: ERROR: $*" >&2; exit 1; }

config="${AUTODEPLOY_CONFIG:-autodeploy.yml}"
out="dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) fail "unknown argument $1 (usage: scripts/package.sh [--config FILE] [--out DIR])" ;;
  esac
done
[ -f "$config" ] || fail "config file $config not found (pass --config FILE)"
command -v python3 >/dev/null || fail "python3 is needed to write and check the zip"

# A static musl binary runs on every Functions Linux image (the official Rust quickstart's choice);
# a glibc build would need a newer glibc than some images have. Never fall back to it silently.
target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "package.sh: adding the Rust target $target"
  rustup target add "$target" || fail "cannot add the Rust target $target (rustup target add $target); refusing to build a glibc binary instead"
fi
if ! command -v musl-gcc >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "package.sh: installing musl-tools (needed to compile C dependencies for $target)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null) \
      || fail "cannot install musl-tools; install it (apt-get install musl-tools) and run again"
  else
    fail "musl-gcc not found: install musl-tools (Debian/Ubuntu: apt-get install musl-tools)"
  fi
fi

echo "package.sh: building the static release binary ($target)"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$target" --bin aml-autodeploy
binary="${CARGO_TARGET_DIR:-target}/$target/release/aml-autodeploy"
[ -x "$binary" ] || fail "the build produced no $binary"
if ldd "$binary" 2>&1 | grep -q "=>"; then
  fail "$binary is dynamically linked; expected a static binary"
fi

# Validate the config with the binary being shipped, and collect the files it references.
"$binary" check-config --config "$config" >/dev/null || {
  "$binary" check-config --config "$config" || true
  fail "the config $config has problems (see above)"
}
files=$("$binary" check-config --config "$config" --list-files) || fail "cannot list the files $config refers to"

mkdir -p "$out"
zip_path="$out/aml-autodeploy.zip"
python3 - "$zip_path" "$binary" "$config" $files <<'PY'
import json, os, sys, zipfile

zip_path, binary, config, *referenced = sys.argv[1:]
config_dir = os.path.dirname(config)
host = json.load(open("host.json"))
exe = host["customHandler"]["description"]["defaultExecutablePath"]

entries = [("host.json", "host.json", 0o644)]
for folder in sorted(os.listdir(".")):
    if os.path.isfile(os.path.join(folder, "function.json")):
        entries.append((os.path.join(folder, "function.json"), f"{folder}/function.json", 0o644))
entries.append((binary, exe, 0o755))
entries.append((config, "autodeploy.yml", 0o644))
for rel in referenced:
    entries.append((os.path.join(config_dir, rel), rel, 0o644))

tmp = zip_path + ".tmp"
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    for source, name, mode in entries:
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        info.create_system = 3  # Unix, so the mode below is honoured on extraction
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(source, "rb") as f:
            z.writestr(info, f.read())
os.replace(tmp, zip_path)
PY

# Check the output: layout, mode, host.json names a file that exists, the binary runs.
python3 - "$zip_path" $files <<'PY'
import json, os, stat, subprocess, sys, tempfile, zipfile

zip_path, *referenced = sys.argv[1:]
z = zipfile.ZipFile(zip_path)
names = set(z.namelist())
def die(msg):
    print(f"package.sh: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)
for required in ["host.json", "ModelRegistered/function.json", "Reconcile/function.json", "autodeploy.yml", *referenced]:
    if required not in names:
        die(f"{required} is missing from the package")
host = json.loads(z.read("host.json"))
exe = host["customHandler"]["description"]["defaultExecutablePath"]
if exe not in names:
    die(f"host.json points to {exe}, which is not in the package")
mode = (z.getinfo(exe).external_attr >> 16) & 0o777
if mode != 0o755:
    die(f"{exe} has mode {oct(mode)} in the zip, expected 0755")
with tempfile.TemporaryDirectory() as d:
    z.extractall(d)
    path = os.path.join(d, exe)
    os.chmod(path, 0o755)
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0:
        die(f"the packaged binary does not run: {version.stderr.strip()}")
print(f"package.sh: {zip_path}: {os.path.getsize(zip_path) / 1e6:.1f} MB, {len(names)} files; {version.stdout.strip()}")
PY
