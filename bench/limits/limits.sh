#!/usr/bin/env bash
# What one hop costs on this machine (docs/performance.md, "What one hop costs"): what nginx, one FastAPI process, one Python proxy hop
# (three client libraries) and the simplest full chain can do, measured side by side in one run.
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, db test, trust auth). Ports 18090-18104.
set -u
here=$(cd "$(dirname "$0")" && pwd)
venv=${TMPDIR:-/tmp}/bagtrack-limits-venv
command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null; }
[ -x "$venv/bin/uvicorn" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q fastapi 'uvicorn[standard]' httpx aiohttp httpx-aiohttp sqlalchemy psycopg2-binary; }
[ -d "$venv/lib" ] && ls "$venv"/lib/python*/site-packages | grep -q '^asyncpg$' || "$venv/bin/pip" install -q asyncpg
psql -q -h 127.0.0.1 -U postgres -d test -c "create table if not exists bench_bags(id int primary key, qr text unique); insert into bench_bags select g, 'SB'||lpad(g::text,6,'0') from generate_series(1,100000) g on conflict do nothing; analyze bench_bags;
drop table if exists bench_scans, bench_children, bench_parents;
create table bench_parents(id serial primary key, qr text unique, child_count int not null default 0, capacity int not null default 30);
create table bench_children(id serial primary key, qr text unique, parent_id int);
create table bench_scans(id bigserial primary key, parent_qr text, child_qr text, at timestamptz default now());
insert into bench_parents(qr) select 'SB'||lpad(g::text,6,'0') from generate_series(1,100000) g; analyze bench_parents;" >/dev/null
conf=$(mktemp); cat > "$conf" <<NGX
worker_processes 1; pid $conf.pid; error_log $conf.err;
events { worker_connections 4096; }
http { access_log off;
  upstream chain { server 127.0.0.1:18103; keepalive 64; }
  server { listen 127.0.0.1:18090;
    location = /nginx-health { default_type application/json; return 200 '{"status":"ok"}'; }
    location / { proxy_pass http://chain; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
pids=()
cd "$here"
for spec in raw:18100 fast:18101 proxy:18102 proxy_aio:18103 proxy_hx_aio:18104 fast_async:18105; do
  "$venv/bin/uvicorn" "apps:${spec%%:*}" --port "${spec##*:}" --log-level warning --no-access-log & pids+=($!)
done
nginx -c "$conf"; sleep 4
cat > "$conf.lua" <<'LUA'
request = function() return wrk.format("GET", "/bag/" .. math.random(1, 100000)) end
LUA
row() { printf "%-52s" "$1"; wrk -t1 -c"$2" -d5s --latency ${4:-} "$3" 2>&1 | awk '/Requests\/sec/{r=$2} / 50%/{p=$2} / 99%/{q=$2} /timeout/{t=" "$0} END{printf "%10s rps  p50 %-9s p99 %-9s%s\n", r, p, q, t}'; }
row "nginx return 200 (c100)" 100 http://127.0.0.1:18090/nginx-health
row "raw ASGI on uvicorn (c100)" 100 http://127.0.0.1:18100/
row "FastAPI direct /health (c10)" 10 http://127.0.0.1:18101/health
row "proxy hop httpx -> FastAPI (c10)" 10 http://127.0.0.1:18102/health
row "proxy hop aiohttp -> FastAPI (c10)" 10 http://127.0.0.1:18103/health
row "proxy hop httpx+aiohttp transport -> FastAPI (c10)" 10 http://127.0.0.1:18104/health
row "FastAPI sync PG PK lookup (c100)" 100 http://127.0.0.1:18101 "-s $conf.lua"
row "nginx -> aiohttp hop -> FastAPI -> PG (c50)" 50 http://127.0.0.1:18090 "-s $conf.lua"
cat > "$conf.scan.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"parent":"SB%06d","child":"C%d%d"}', math.random(1, 100000), math.random(1, 999999999), n)
  return wrk.format("POST", "/scan", {["Content-Type"] = "application/json"}, body)
end
LUA
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks
wrow() {  # label, port, pid: req/s, latency, and the server's CPU per request
  local before after out reqs
  before=$(cpu "$3")
  out=$(wrk -t1 -c50 -d5s --latency -s "$conf.scan.lua" "http://127.0.0.1:$2" 2>&1)
  after=$(cpu "$3")
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  printf "%-52s" "$1"
  echo "$out" | awk -v t=$((after - before)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" '/Requests\/sec/{r=$2} / 50%/{p=$2} / 99%/{q=$2} END{printf "%10s rps  p50 %-9s p99 %-9s server CPU %.2f ms/req\n", r, p, q, 1000*t/hz/n}'
}
wrow "write: one-statement child scan, sync psycopg2 (c50)" 18101 "${pids[1]}"
wrow "write: one-statement child scan, asyncpg (c50)" 18105 "${pids[5]}"
nginx -c "$conf" -s quit; kill "${pids[@]}"; wait 2>/dev/null; rm -f "$conf" "$conf.lua" "$conf.scan.lua"
