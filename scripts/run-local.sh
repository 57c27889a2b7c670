#!/usr/bin/env bash
# Start Azurite in memory (unless a storage already answers on its ports), then the local host.
#
#   PORT=7072 ./scripts/run-local.sh                  the local host's HTTP port (default 7071)
#   BLOB_PORT=20000 QUEUE_PORT=20001 TABLE_PORT=20002 Azurite's ports (default 10000-10002)
#   AZURITE_PORTS=20000                               the same: blob, blob+1 and blob+2
#
# `make run PORT=7072 AZURITE_PORTS=20000` passes them on. Arguments go to `mailfiler run`.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-7071}"
custom_storage=""
if [ -n "${AZURITE_PORTS:-}" ]; then
  BLOB_PORT="${BLOB_PORT:-$AZURITE_PORTS}"
  QUEUE_PORT="${QUEUE_PORT:-$((AZURITE_PORTS + 1))}"
  TABLE_PORT="${TABLE_PORT:-$((AZURITE_PORTS + 2))}"
fi
if [ -n "${BLOB_PORT:-}${QUEUE_PORT:-}${TABLE_PORT:-}" ]; then
  custom_storage=yes
fi
BLOB_PORT="${BLOB_PORT:-10000}"
QUEUE_PORT="${QUEUE_PORT:-10001}"
TABLE_PORT="${TABLE_PORT:-10002}"
for value in "$PORT" "$BLOB_PORT" "$QUEUE_PORT" "$TABLE_PORT"; do
  case "$value" in
    '' | *[!0-9]*) echo "run-local: '$value' is not a port number" >&2; exit 2 ;;
  esac
done
ports="blob $BLOB_PORT, queue $QUEUE_PORT, table $TABLE_PORT"
log="${AZURITE_LOG:-.azurite.log}"

if [ -n "$custom_storage" ]; then
  # The emulator's well-known account on these ports (the environment wins over
  # local.settings.json, so the app and this script agree).
  key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
  base="http://127.0.0.1"
  export AzureWebJobsStorage="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$key;BlobEndpoint=$base:$BLOB_PORT/devstoreaccount1;QueueEndpoint=$base:$QUEUE_PORT/devstoreaccount1;TableEndpoint=$base:$TABLE_PORT/devstoreaccount1;"
fi

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

azurite_pid=""
cleanup() { [ -n "$azurite_pid" ] && kill "$azurite_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if answers "$QUEUE_PORT"; then
  storage="storage: reusing the one already running on 127.0.0.1 ($ports): what it holds from
  earlier runs stays, and stays after Ctrl-C (stop that process, or choose other ports with
  AZURITE_PORTS=..., for a fresh one)"
else
  # In its own session where setsid exists: Ctrl-C stops the host first, which lets go of the
  # storage, and then the trap stops Azurite (not both at once, the host mid-request).
  own_session=""
  command -v setsid >/dev/null && own_session=setsid
  $own_session node_modules/.bin/azurite --inMemoryPersistence --silent --skipApiVersionCheck \
    --disableTelemetry --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 \
    --blobPort "$BLOB_PORT" --queuePort "$QUEUE_PORT" --tablePort "$TABLE_PORT" \
    --blobKeepAliveTimeout 600 --queueKeepAliveTimeout 600 --tableKeepAliveTimeout 600 >"$log" 2>&1 &
  azurite_pid=$!
  started=""
  for _ in $(seq 1 75); do
    if ! kill -0 "$azurite_pid" 2>/dev/null; then break; fi  # it gave up (a port in use...)
    if answers "$BLOB_PORT" && answers "$QUEUE_PORT" && answers "$TABLE_PORT"; then
      started=yes
      break
    fi
    sleep 0.2
  done
  if [ -z "$started" ]; then
    echo "run-local: Azurite failed to start on 127.0.0.1 ($ports); its log ($log):" >&2
    tail -n 5 "$log" | sed 's/^/  /' >&2
    echo "  a port in use? choose others: make run AZURITE_PORTS=20000" >&2
    exit 1
  fi
  storage="storage: Azurite in memory on 127.0.0.1 ($ports), pid $azurite_pid; it stops with
  Ctrl-C and, being in memory, forgets everything"
fi

# The configuration `mailfiler run` will read: --config, else MAILFILER_CONFIG (environment,
# then local.settings.json).
config=""
previous=""
for arg in "$@"; do
  case "$arg" in
    --config=*) config="${arg#--config=}" ;;
  esac
  [ "$previous" = "--config" ] && config="$arg"
  previous="$arg"
done
if [ -z "$config" ]; then
  config="${MAILFILER_CONFIG:-}"
fi
if [ -z "$config" ] && [ -f local.settings.json ]; then
  config="$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1])).get("Values", {}).get("MAILFILER_CONFIG", ""))' local.settings.json)"
fi

echo "$storage"
cat <<MSG
mailfiler: configuration ${config:-(none set: mailfiler run will say so)}
  health:    curl -s http://127.0.0.1:$PORT/api/health
  records:   .venv/bin/mailfiler records list
  stop:      Ctrl-C
MSG
# Not exec: the trap stops Azurite when the host ends.
.venv/bin/mailfiler run --port "$PORT" "$@"
