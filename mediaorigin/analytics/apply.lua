-- Apply analytics events to the aggregates, each exactly once (keys.py has the layout).
--
-- ARGV: seen_ttl, day_ttl, session_ttl, max_gap, bucket, live_window, then per event four
-- values: its JSON (as in the stream), its UTC day (yyyymmdd), the media duration in seconds
-- ('' when unknown) and the last second of the media the heatmap may count.
--
-- Redis runs a script atomically, so for every event either its guard key
-- `analytics:seen:{id}` and all its aggregate updates happen, or nothing does. A redelivered
-- event finds its guard and changes nothing: an aggregator that dies after applying but
-- before XACK cannot count anything twice. Key names are built here from the media id
-- (one Redis server; not cluster-safe). Returns how many events were applied.

local seen_ttl, day_ttl, session_ttl = ARGV[1], ARGV[2], ARGV[3]
local max_gap = tonumber(ARGV[4])               -- 2 x the players' heartbeat interval
local bucket = tonumber(ARGV[5])                -- heatmap bucket, seconds of media
local window = tonumber(ARGV[6])                -- live: seen this recently = watching

local expire_day, expire_session = {}, {}       -- keys written, their TTL set once at the end

-- After these the player is playing; after pause, ended, buffering_start, error it is not.
local PLAYING = {play = true, heartbeat = true, seek = true, quality_change = true,
                 buffering_end = true}
local PLAYER = {play = true, pause = true, seek = true, quality_change = true,
                buffering_start = true, buffering_end = true, heartbeat = true,
                ended = true, error = true}

local function incr(key, field, n)
  redis.call('HINCRBY', key, field, n)
  expire_day[key] = true
end

local function ms(seconds)
  return math.floor(seconds * 1000 + 0.5)
end

local function num(v)
  if type(v) == 'number' then return v end
  return nil
end

local function str(v)
  if type(v) == 'string' then return v end
  return ''
end

-- Heatmap: count a watched span [a, b) of media positions, per second of the media in the
-- session's 2-bit counters; a bucket is watched when any of its seconds was, re-watched when
-- any of its seconds was watched twice. A session moves each bucket forward at most once per
-- state, so the counts are sessions.
local function heat(S, H, a, b, max_seconds)
  local s0, s1 = math.floor(a + 0.5), math.floor(b + 0.5)
  if s0 < 0 then s0 = 0 end
  if s1 > max_seconds then s1 = max_seconds end
  if s1 <= s0 then return end
  local best = {}
  local s = s0
  while s < s1 do
    local e = math.min(s1, s + 256)
    local args = {S .. ':sec', 'OVERFLOW', 'SAT'}
    for x = s, e - 1 do
      args[#args + 1] = 'INCRBY'; args[#args + 1] = 'u2'
      args[#args + 1] = '#' .. x; args[#args + 1] = '1'
    end
    local counts = redis.call('BITFIELD', unpack(args))
    for i, n in ipairs(counts) do
      local bk = math.floor((s + i - 1) / bucket)
      if (best[bk] or 0) < n then best[bk] = n end
    end
    s = e
  end
  for bk, n in pairs(best) do
    if n > 2 then n = 2 end
    local was = redis.call('BITFIELD', S .. ':bkt', 'GET', 'u2', '#' .. bk)[1]
    if n > was then
      redis.call('BITFIELD', S .. ':bkt', 'SET', 'u2', '#' .. bk, n)
      if was < 1 then incr(H, 'w:' .. bk, 1) end
      if n >= 2 then incr(H, 'r:' .. bk, 1) end
    end
  end
  expire_session[S .. ':sec'] = true
  expire_session[S .. ':bkt'] = true
end

local function apply(raw, day, duration, max_seconds)
  local e = cjson.decode(raw)
  if not redis.call('SET', 'analytics:seen:' .. e.id, '1', 'NX', 'EX', seen_ttl) then
    return 0
  end
  local typ, media = e.type, e.media_id
  local ts = e.timestamp
  local session, user = str(e.session), str(e.user)
  local pos = num(e.position)
  local quality, country, device = str(e.quality), str(e.country), str(e.device)
  local live = string.sub(media, 1, 5) == 'live_'

  local M = 'analytics:' .. media
  local D = M .. ':' .. day
  local C, T = D .. ':c', M .. ':total'

  local viewer = nil
  if user ~= '' then viewer = 'u:' .. user elseif session ~= '' then viewer = 's:' .. session end
  local S = nil
  local st = {}
  if session ~= '' then
    S = 'analytics:session:' .. media .. ':' .. session
    local v = redis.call('HMGET', S, 'ts', 'pos', 'type', 'q', 'bs', 'geo', 'dev',
                         'en', 'ems', 'rn', 'rms', 'cn', 'cms')
    st.ts, st.pos, st.type, st.q = tonumber(v[1]), tonumber(v[2]), v[3], v[4]
    st.bs, st.geo, st.dev = tonumber(v[5]), v[6], v[7]
    -- Rebuffering so far: from buffering_start/_end events (en stalls, ems ms), as reported
    -- (rn, rms: the player's session totals), and what the aggregates already hold (cn, cms).
    st.en, st.ems = tonumber(v[8]) or 0, tonumber(v[9]) or 0
    st.rn, st.rms = tonumber(v[10]) or 0, tonumber(v[11]) or 0
    st.cn, st.cms = tonumber(v[12]) or 0, tonumber(v[13]) or 0
    expire_session[S] = true
  end
  -- Older than what the session already applied (e.g. reclaimed from a dead consumer after
  -- newer events were read): it still counts, but draws no span and moves no state.
  local late = S ~= nil and st.ts ~= nil and ts < st.ts
  local state = {}                              -- session fields to write

  -- Audience: each session counted once, on the first event naming its country / device.
  if S then
    if country ~= '' and not st.geo then
      incr(D .. ':geo', country, 1)
      state[#state + 1] = 'geo'; state[#state + 1] = country
    end
    if device ~= '' and not st.dev then
      incr(D .. ':dev', device, 1)
      state[#state + 1] = 'dev'; state[#state + 1] = device
    end
  end

  -- Live streams: concurrent sessions (seen within `window`) and the day's peak.
  if live and S and (typ == 'heartbeat' or typ == 'segment' or typ == 'play') then
    local L = M .. ':live'
    redis.call('ZADD', L, 'GT', ts, session)
    redis.call('ZREMRANGEBYSCORE', L, '-inf', '(' .. (ts - 10 * window))
    expire_session[L] = true
    local now = redis.call('ZCOUNT', L, '(' .. (ts - window), '+inf')
    if now > (tonumber(redis.call('HGET', C, 'peak')) or 0) then
      redis.call('HSET', C, 'peak', now)
      expire_day[C] = true
    end
  end

  -- Origin events: what was served.
  if typ == 'segment' or typ == 'manifest' then
    incr(C, typ .. 's', 1)
    local nbytes = num(e.bytes)
    if nbytes and nbytes > 0 then
      incr(C, 'bytes', nbytes)
      incr(T, 'bytes', nbytes)
    end
  end

  if PLAYER[typ] then
    local bandwidth = num(e.bandwidth)
    if bandwidth and bandwidth > 0 then
      redis.call('HINCRBYFLOAT', C, 'bw_sum', bandwidth)
      incr(C, 'bw_n', 1)
      redis.call('HINCRBYFLOAT', T, 'bw_sum', bandwidth)
      incr(T, 'bw_n', 1)
    end

    if typ == 'play' then
      -- A view is the first play of a session (every play, for events without a session).
      if not S or redis.call('HSETNX', S, 'viewed', '1') == 1 then
        incr(C, 'views', 1)
        incr(T, 'views', 1)
        if viewer then
          redis.call('PFADD', D .. ':u', viewer)
          redis.call('PFADD', T .. ':u', viewer)
          expire_day[D .. ':u'] = true
          expire_day[T .. ':u'] = true
        end
      end
      local startup = num(e.startup_time)
      if startup and startup >= 0 then
        incr(C, 'startup_ms', ms(startup))
        incr(C, 'startup_n', 1)
      end
    elseif typ == 'quality_change' then
      incr(C, 'switches', 1)
    elseif typ == 'error' then
      incr(C, 'errors', 1)
      local code = string.sub(str(e.error), 1, 64)
      incr(D .. ':err', code ~= '' and code or 'unknown', 1)
    end

    -- Rebuffering: a stall per buffering_start, lasting until its buffering_end; a beacon's
    -- buffering {count, duration} are the session's totals so far. A session counts the
    -- larger of the two, so players that send either or both are counted once.
    local stalls, stall_ms = 0, 0
    if typ == 'buffering_start' then
      stalls = 1
      if S and not late then state[#state + 1] = 'bs'; state[#state + 1] = ts end
    elseif typ == 'buffering_end' and st.bs and ts >= st.bs then
      stall_ms = ms(ts - st.bs)
      redis.call('HDEL', S, 'bs')
    end
    if S then
      local en, ems = st.en + stalls, st.ems + stall_ms
      local rn, rms = st.rn, st.rms
      local count, seconds = num(e.buffering_count), num(e.buffering_duration)
      if count and count > rn then rn = math.floor(count) end
      if seconds and ms(seconds) > rms then rms = ms(seconds) end
      local cn, cms = math.max(en, rn), math.max(ems, rms)
      if cn > st.cn then incr(C, 'buffering', cn - st.cn) end
      if cms > st.cms then incr(C, 'buffering_ms', cms - st.cms) end
      if en ~= st.en or ems ~= st.ems or rn ~= st.rn or rms ~= st.rms then
        for _, kv in ipairs({{'en', en}, {'ems', ems}, {'rn', rn}, {'rms', rms},
                             {'cn', cn}, {'cms', cms}}) do
          state[#state + 1] = kv[1]; state[#state + 1] = kv[2]
        end
      end
    elseif stalls > 0 then
      incr(C, 'buffering', stalls)
    end

    -- Watched time: between two consecutive events of a session, min(position delta, wall
    -- delta) when both are positive, the gap is below max_gap and the player was playing.
    local far = nil
    if pos and typ ~= 'seek' and typ ~= 'play' then far = pos end
    if S and pos and not late then
      local w = 0
      if st.ts and st.pos and PLAYING[st.type] then
        local dt, dp = ts - st.ts, pos - st.pos
        if dp > 0 and dt > 0 and dt < max_gap then w = math.min(dp, dt) end
      end
      if w > 0 then
        local wms = ms(w)
        local q = st.q
        if not q then q = quality ~= '' and quality or 'unknown' end
        incr(C, 'playtime_ms', wms)
        incr(T, 'playtime_ms', wms)
        incr(D .. ':q', q, wms)
        incr(T .. ':q', q, wms)
        if user ~= '' then incr(M .. ':viewers:watched', user, wms) end
        if not live then heat(S, D .. ':heat', st.pos, st.pos + w, max_seconds) end
        if not far or st.pos + w > far then far = st.pos + w end
      end
      state[#state + 1] = 'ts'; state[#state + 1] = ts
      state[#state + 1] = 'pos'; state[#state + 1] = pos
      state[#state + 1] = 'type'; state[#state + 1] = typ
    end
    if S and quality ~= '' and not late then
      state[#state + 1] = 'q'; state[#state + 1] = quality
    end

    -- Progress and completion (recorded media only: a live stream has no end).
    if far and user ~= '' and not live then
      local F = M .. ':viewers:furthest'
      local was = tonumber(redis.call('HGET', F, user))
      if not was or far > was then
        redis.call('HSET', F, user, far)
        expire_day[F] = true
      end
    end
    if not live and (typ == 'ended' or (duration and duration > 0 and far
                                        and far >= 0.95 * duration)) then
      if not S or redis.call('HSETNX', S, 'done', '1') == 1 then
        incr(C, 'completions', 1)
        incr(T, 'completions', 1)
        if user ~= '' then
          redis.call('HSET', M .. ':viewers:completed', user, '1')
          expire_day[M .. ':viewers:completed'] = true
        end
      end
    end
  end

  if late then incr(C, 'late', 1) end
  if #state > 0 then redis.call('HSET', S, unpack(state)) end
  return 1
end

local applied = 0
for i = 7, #ARGV, 4 do
  applied = applied + apply(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]),
                            tonumber(ARGV[i + 3]))
end
for key in pairs(expire_day) do redis.call('EXPIRE', key, day_ttl) end
for key in pairs(expire_session) do redis.call('EXPIRE', key, session_ttl) end
return applied
