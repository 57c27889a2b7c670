#!/usr/bin/env bash
# Start Azurite in memory (unless storage already answers on 10000-10002), then the local host.
set -euo pipefail
cd "$(dirname "$0")/.."

azurite_pid=""
cleanup() { [ -n "$azurite_pid" ] && kill "$azurite_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if ! (exec 3<>/dev/tcp/127.0.0.1/10001) 2>/dev/null; then
  node_modules/.bin/azurite --inMemoryPersistence --silent --skipApiVersionCheck \
    --disableTelemetry --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 \
    --blobKeepAliveTimeout 600 --queueKeepAliveTimeout 600 --tableKeepAliveTimeout 600 >.azurite.log 2>&1 &
  azurite_pid=$!
  for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/10002) 2>/dev/null && break
    sleep 0.2
  done
  echo "azurite: in memory on 127.0.0.1:10000-10002 (pid $azurite_pid)"
fi

cat <<'MSG'
mailfiler: filing the sample mail from samples/mail (config: samples/mailfiler.yaml).
  health:    curl -s http://127.0.0.1:7071/api/health
  records:   .venv/bin/mailfiler records list
  stop:      Ctrl-C
MSG
.venv/bin/mailfiler run "$@"
