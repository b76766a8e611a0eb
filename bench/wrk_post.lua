-- wrk script used by bench/analytics_bench.py.
--
-- POSTs one body (the file named first after "--" on the wrk command line) to one path (the
-- second argument) as application/json, over and over: the request is formatted once. At the
-- end it prints one machine-readable line (WRKJSON {...}) like wrk_paths.lua; non-2xx/3xx
-- answers count as errors_status. Latencies are in microseconds.

local req

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", args[2], {["Content-Type"] = "application/json"}, body)
end

function request()
  return req
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
