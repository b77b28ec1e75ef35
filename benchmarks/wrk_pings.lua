-- wrk script: POST pings rotating through the tokens in $WRK_TOKENS; with WRK_CLOSE=1 each
-- request asks for Connection: close; $WRK_SUFFIX goes after the token (a check-in);
-- $WRK_DELAY_MS paces each connection. Figures go to $WRK_OUT as JSON.
local tokens = {}
local i = 0
local close = os.getenv("WRK_CLOSE") == "1"
local suffix = os.getenv("WRK_SUFFIX") or ""  -- a check-in: "/start", "/0"
-- A paced load: each connection waits this long after an answer (connections x 1000 /
-- (delay + latency) requests a second); 0: as fast as the server answers.
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")

function init(args)
  for line in io.lines(os.getenv("WRK_TOKENS")) do
    if #line == 64 then tokens[#tokens + 1] = line end
  end
  i = math.random(#tokens)
end

function request()
  i = (i % #tokens) + 1
  local headers = { ["Host"] = "bench" }
  if close then headers["Connection"] = "close" end
  return wrk.format("POST", "/api/v1/heartbeats/" .. tokens[i] .. suffix, headers)
end

if pause > 0 then  -- only then: wrk sends every request through a timer once delay exists
  function delay()
    return pause
  end
end

function done(summary, latency, requests)
  local f = io.open(os.getenv("WRK_OUT"), "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
  f:close()
end
