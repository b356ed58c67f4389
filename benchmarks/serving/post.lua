-- wrk script: one POST per request, cycling through a file of JSON bodies (one per line).
--
--   wrk -t1 -c8 -d20s --latency -s post.lua http://127.0.0.1:PORT/PATH -- BODIES_FILE
--
-- "{{n}}" in a body is replaced by the request's sequence number, so ids that
-- must not repeat (transaction ids) are unique per request. At the end one line
-- "WRK_JSON {...}" carries the counts and latency percentiles (microseconds) for
-- the caller to parse; wrk's own report is printed as usual.

local parts = {}
local n = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      local a, b = line:find("{{n}}", 1, true)
      if a then
        table.insert(parts, { line:sub(1, a - 1), line:sub(b + 1) })
      else
        table.insert(parts, { line })
      end
    end
  end
  if #parts == 0 then
    error("no request bodies in " .. args[1])
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local p = parts[(n - 1) % #parts + 1]
  local body = p[1]
  if p[2] then
    body = p[1] .. n .. p[2]
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local pct = {}
  for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
    table.insert(pct, string.format('"%s": %d', tostring(p), latency:percentile(p)))
  end
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, "percentiles": {%s}}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max, table.concat(pct, ", ")))
end
