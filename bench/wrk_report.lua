-- wrk script of the HTTP benchmarks (bench/loadgen.py's run_wrk): the request from the
-- environment, every response's status counted, and one JSON line of results at the end.
--
--   WRK_METHOD      request method (default GET)
--   WRK_BODY_FILE   file whose content is the request body
--   WRK_EVENTS      "1": each request is a new batch of WRK_BATCH events (see below)
--   WRK_BUDGET_MS   also report the share of requests slower than this (default 1500)
--
-- Visitors in turn: with WRK_TOKENS (comma separated) and no WRK_EVENTS, request n carries
-- token n mod count, in the X-Visitor-Token header and in place of __TOKEN__ in the body
-- (one request per token is built up front, so this costs wrk nothing per request).
--
-- Event batches (POST /v1/events, shaped like the embed script's beacons): event ids are
-- unique across threads, requests and runs (WRK_RUN_ID, the thread's number, a counter);
-- WRK_TOKENS (comma separated) are the visitors the batches come from, in turn;
-- WRK_ITEMS (comma separated) the item ids the events name; WRK_SHOP the shop.

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
  table.insert(threads, thread)
end

local function split(text)
  local parts = {}
  for part in string.gmatch(text or "", "[^,]+") do
    table.insert(parts, part)
  end
  return parts
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

function init(args)
  statuses = {}
  wrk.method = os.getenv("WRK_METHOD") or "GET"
  local body_file = os.getenv("WRK_BODY_FILE")
  if body_file and body_file ~= "" then
    wrk.body = read_file(body_file)
  end
  if os.getenv("WRK_EVENTS") == "1" then
    run_id = os.getenv("WRK_RUN_ID") or "run"
    batch = tonumber(os.getenv("WRK_BATCH") or "10")
    tokens = split(os.getenv("WRK_TOKENS"))
    items = split(os.getenv("WRK_ITEMS"))
    shop = os.getenv("WRK_SHOP") or "demo"
    counter = 0
    request = events_request
  elseif os.getenv("WRK_TOKENS") and os.getenv("WRK_TOKENS") ~= "" then
    prebuilt = {}
    for i, token in ipairs(split(os.getenv("WRK_TOKENS"))) do
      local headers = {}
      for name, value in pairs(wrk.headers) do
        headers[name] = value
      end
      headers["X-Visitor-Token"] = token
      local body = wrk.body and string.gsub(wrk.body, "__TOKEN__", token) or nil
      prebuilt[i] = wrk.format(nil, nil, headers, body)
    end
    sent = 0
    request = rotating_request
  end
  -- Otherwise no request(): wrk then sends one request built once, the cheapest way.
end

function rotating_request()
  sent = sent + 1
  return prebuilt[(sent % #prebuilt) + 1]
end

-- A batch as the embed script sends it: views, a list seen, a promotion seen, a cart add.
local KINDS = { "view_item", "view_item", "view_item", "view_item", "view_item", "view_item",
  "view_item_list", "view_item_list", "view_promotion", "add_to_cart" }

local function event_json(n, kind, now_ms)
  local id = string.format("%s-%d-%d-%d", run_id, thread_id, counter, n)
  local item = items[((counter * batch + n + thread_id) % #items) + 1]
  if kind == "view_promotion" then
    return string.format('{"event_id":"%s","type":"view_promotion","ts":%d,"promotion_id":"uk-delivery","creative_slot":"top-banner"}', id, now_ms)
  elseif kind == "view_item_list" then
    local other = items[((counter * batch + n * 7 + thread_id) % #items) + 1]
    return string.format('{"event_id":"%s","type":"view_item_list","ts":%d,"item_list_id":"home-recs","item_list_name":"top_picks","items":[{"item_id":"%s"},{"item_id":"%s"}]}', id, now_ms, item, other)
  elseif kind == "add_to_cart" then
    return string.format('{"event_id":"%s","type":"add_to_cart","ts":%d,"item_id":"%s","items":[{"item_id":"%s","quantity":1,"price":2.95}],"value":2.95,"currency":"GBP"}', id, now_ms, item, item)
  end
  return string.format('{"event_id":"%s","type":"view_item","ts":%d,"item_id":"%s","items":[{"item_id":"%s","quantity":1}]}', id, now_ms, item, item)
end

function events_request()
  counter = counter + 1
  local now_ms = os.time() * 1000
  local parts = {}
  for n = 1, batch do
    parts[n] = event_json(n, KINDS[((n - 1) % #KINDS) + 1], now_ms)
  end
  local token = tokens[(counter % #tokens) + 1]
  local body = string.format('{"shop":"%s","token":"%s","events":[%s]}', shop, token, table.concat(parts, ","))
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

-- The share of recorded latencies above `limit_us`, by bisection on the percentiles.
local function share_above(latency, limit_us)
  if latency.max <= limit_us then
    return 0
  end
  local low, high = 0, 100
  for _ = 1, 24 do
    local mid = (low + high) / 2
    if latency:percentile(mid) > limit_us then
      high = mid
    else
      low = mid
    end
  end
  return 100 - high
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local status_parts = {}
  for status, n in pairs(counts) do
    table.insert(status_parts, string.format('"%d":%d', status, n))
  end
  local e = summary.errors
  local budget_ms = tonumber(os.getenv("WRK_BUDGET_MS") or "1500")
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"statuses":{%s},"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d},' ..
    '"budget_ms":%d,"over_budget_pct":%.4f}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(status_parts, ","),
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9),
    budget_ms, share_above(latency, budget_ms * 1000)))
end
