-- wrk script of the API bench (bench/api_load.py): GET the paths listed one per line in the file
-- named by $PROCWATCH_WRK_PATHS, in order and cyclically (each thread starting at its own offset),
-- and print the measurements as one JSON line after "PROCWATCH_WRK " for the bench to parse.

local paths = {}
for line in io.lines(os.getenv("PROCWATCH_WRK_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
end

function init(args)
  -- `offset` is set by setup() in this thread's own Lua state before init runs.
  i = offset or 0
end

function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PROCWATCH_WRK {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d,'
    .. ' "max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d,'
    .. ' "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
