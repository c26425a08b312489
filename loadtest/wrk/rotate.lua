-- wrk script: POST a different body (JSON, or binary for gRPC-Web) on every
-- request, rotating through a file with one body per line, and print a JSON
-- summary at the end so the harness never parses wrk's human-readable output.
--
-- Environment: WRK_BODIES (path of the bodies file), WRK_PATH (request path),
-- WRK_HEADERS (optional "Name: value" pairs separated by "\n"), WRK_THREAD_RATE
-- (optional requests per second for each wrk thread: its connections take turns
-- on one schedule of evenly spaced send times, so the rate holds whatever the
-- latency, and a connection that answers late sends its next request at once),
-- WRK_HEX=1 (optional: each line is a hex-encoded binary body), WRK_CONTENT_TYPE
-- (optional, default application/json), WRK_STATUS=1 (optional: count responses
-- per HTTP status, printed as "statuses"; off by default, since a response
-- callback costs wrk some throughput).

local bodies = {}
local index = 0
local path = os.getenv("WRK_PATH") or "/"
local rate = tonumber(os.getenv("WRK_THREAD_RATE") or "0")
local threads = {}
statuses = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  local hex = os.getenv("WRK_HEX") == "1"
  for line in io.lines(os.getenv("WRK_BODIES")) do
    if #line > 0 then
      if hex then  -- binary bodies (gRPC-Web), one hex-encoded body per line
        line = line:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      end
      bodies[#bodies + 1] = line
    end
  end
  -- Start each thread at a different offset so threads do not send in lockstep.
  index = math.random(#bodies)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
  for name, value in string.gmatch(os.getenv("WRK_HEADERS") or "", "([^:\n]+):%s*([^\n]+)") do
    wrk.headers[name] = value
  end
end

function request()
  index = index % #bodies + 1
  return wrk.format(nil, path, nil, bodies[index])
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } wrk_timespec;
    int clock_gettime(int clock, wrk_timespec *ts);
  ]]
  local ts = ffi.new("wrk_timespec")
  local CLOCK_MONOTONIC = 1
  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate
  local due = nil
  -- called after each response: when this connection sends next (ms from now)
  function delay()
    local now = now_ms()
    -- behind by more than a second (a stalled host): start the schedule again rather
    -- than send the backlog in one burst
    if due == nil or due < now - 1000 then
      due = now
    end
    due = due + interval
    local wait = due - now
    if wait <= 0 then
      return 0
    end
    return math.floor(wait + 0.5)
  end
end

if os.getenv("WRK_STATUS") == "1" then
  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

local function status_json()
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"statuses": ' .. status_json() .. ', "requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.mean, latency.max))
end
