-- wrk script for the gateway benchmark: POST one JSON body with optional headers
-- and print a JSON summary (latencies in microseconds) for tests/gateway/bench.py.
-- Environment: BENCH_BODY (the JSON body), BENCH_HEADERS ("Name: value" lines),
-- BENCH_DELAY_MS (pause before each request on a connection, to pace the load).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+):%s*([^\n]+)") do
  wrk.headers[name] = value
end

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect + errors.read + errors.write + errors.status + errors.timeout))
end
