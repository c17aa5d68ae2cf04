# Sourced by the scripts that start a server and need its address: servers
# started with port 0 say where they listen in a log line
# "<LABEL> server listening on ADDR" (ferroserve, and the bench's minimal
# server), which this waits for.

# listening_addr LOG LABEL: prints ADDR once LOG has the line for LABEL
# (HTTP or gRPC), waiting up to 60 s; otherwise prints the log and fails.
listening_addr() {
  local log=$1 label=$2 addr
  for _ in $(seq 600); do
    addr=$(grep -o "$label server listening on [0-9.:]*" "$log" | awk '{print $NF}' || true)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    sleep 0.1
  done
  cat "$log" >&2
  echo "error: no '$label server listening on' line in $log after 60 s" >&2
  return 1
}
