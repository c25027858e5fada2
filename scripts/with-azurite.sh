#!/usr/bin/env bash
# Runs a command with Azurite (the Azure Storage emulator) on a free loopback port: installs the
# pinned version (package-lock.json) when needed, exports AUTODEPLOY_TEST_STORAGE (a connection
# string to it), and stops it when the command ends, whatever happens.
#
#   scripts/with-azurite.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(node -p 'try { require("./node_modules/azurite/package.json").version } catch (e) { "" }' 2>/dev/null)" != "3.35.0" ]; then
  npm ci --no-audit --no-fund
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
workdir=$(mktemp -d)
node_modules/.bin/azurite-blob --inMemoryPersistence --disableTelemetry --skipApiVersionCheck --loose \
  --blobHost 127.0.0.1 --blobPort "$port" >"$workdir/azurite.log" 2>&1 &
azurite_pid=$!
trap 'kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; rm -rf "$workdir"' EXIT
for _ in $(seq 1 150); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "Azurite did not start:"; cat "$workdir/azurite.log"; exit 1; }

# Azurite's well-known development account key (public).
export AUTODEPLOY_TEST_STORAGE="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$port/devstoreaccount1;"
"$@"
