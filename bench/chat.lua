-- wrk script: POST a realistic ~1 KB chat request; print one JSON summary line.
-- BENCH_BODY: file with the request body. BENCH_BODY2 (optional): a second body,
-- alternated with the first (soak mode mixes JSON and streaming requests).
-- BENCH_KEY (optional): sent as "Authorization: Bearer <key>".

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

wrk.method = "POST"
wrk.body = slurp(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
-- BENCH_HEADERS (optional): more headers, one "Name: value" a line (a peer's routing)
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

local second = os.getenv("BENCH_BODY2")
if second and second ~= "" then
  local texts = { wrk.body, slurp(second) }
  local bodies = nil
  local n = 0
  request = function()
    if not bodies then -- built on first use: wrk adds the Host header after loading the script
      bodies = { wrk.format(nil, nil, nil, texts[1]), wrk.format(nil, nil, nil, texts[2]) }
    end
    n = n + 1
    return bodies[(n % 2) + 1]
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
