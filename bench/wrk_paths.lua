-- wrk script used by bench/origin_bench.py.
--
-- Cycles through the request paths listed (one per line) in the file named after "--" on the
-- wrk command line, so one run spreads its requests over every segment of a title instead of
-- hammering one URL. At the end it prints one machine-readable line (WRKJSON {...}) so the
-- bench does not have to parse wrk's human output. Latencies are in microseconds.

local paths, count, i = {}, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      count = count + 1
      paths[count] = line
    end
  end
  if count == 0 then
    error("no paths in " .. tostring(args[1]))
  end
end

function request()
  i = i % count + 1
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"bytes":%.0f,"duration_us":%.0f,' ..
    '"errors_connect":%.0f,"errors_read":%.0f,"errors_write":%.0f,' ..
    '"errors_status":%.0f,"errors_timeout":%.0f,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%.0f,"lat_p90_us":%.0f,"lat_p99_us":%.0f,"lat_max_us":%.0f}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
