-- One batch of state changes, all or nothing (RedisStore::apply).
--
-- ARGV[1] key prefix, ARGV[2] seats of a new room, ARGV[3] the batch as a
-- JSON array. The batch runs on Lua tables loaded lazily from Redis, in
-- order, with exactly the rules of MemoryStore (host/src/store/memory.rs);
-- only when every change passed is anything written. A refusal returns
-- {kind, reason} with kind one of conflict / not_allowed / invalid / stale /
-- back (a user_offline condition failed; reason: the user); success
-- returns {"ok"}. Redis runs a script alone, so two batches on two nodes
-- never interleave: of two `up` for one seat exactly one sees it free.
--
-- Keys (P = prefix): P member:<user> -> channel; P room:<channel> hash
-- {room_id, seats, s:<id> = "status,mic,user"} (free seats absent);
-- P members:<channel> zset user by join sequence (P joinseq);
-- P call:<user> hash {peer, channel}; P kv:<plugin> hash key -> value,
-- P kvver:<plugin> hash key -> version (absent: 0, written before 1.1),
-- P kvexp:<plugin> hash key -> expiry (unix ms; absent: none),
-- P kvseq:<plugin> the plugin's last version number. An expired entry
-- reads as absent and is removed when a batch writes it.
-- P attrs:<channel> hash attribute -> value, plus the field '' (no key is
-- empty) holding the attributes' version; P attrseq the last version
-- handed out. The hash never expires while the room has members, else
-- ARGV[5] ms after the batch that wrote it, joined or left the room.
-- ARGV[4] is the most attributes a room may hold. Keys and values were
-- checked (sizes, roles) by RedisStore::apply, as MemoryStore does.
-- Timers (contract 1.1, claimed by timers.lua): P timers zset
-- "<plugin>\0<key>" by due time (unix ms); P timerdata hash member ->
-- JSON {p, k, payload, ch, due}; P timerkeys:<plugin> set of the plugin's
-- pending keys; P roomtimers:<channel> set of the members naming it.
-- Notification history (issue 17; read by history.lua): ARGV[6] a JSON
-- array of {s = stream, f = frame} to log once the batch passed, ARGV[7]
-- recovery.history_size, ARGV[8] recovery.history_ttl in ms. P
-- histpos:<stream> hash {epoch, seq}; P hist:<stream> list of "<seq> <unix
-- ms> <stamped frame>" capped at history_size, expiring history_ttl after
-- the last append; P histpos expires ARGV[9] ms (24 h, or the TTL if
-- longer) after it; a stream without P histpos starts a new epoch
-- (P histepoch makes it unique). Success returns {"ok", epoch, seq,
-- stamped frame, ...}, one triple per logged frame, in order, after the
-- facts: {"ok", n, n times (kind, channel, user, seat, peer, room_id,
-- room_seq) with '' for none, then the triples}. P roomseq:<channel>
-- counts a room's facts; a new counter starts at the time in ms times
-- 1000, and expires 24 h (ROOMSEQ_TTL) after the room's last fact, so a
-- room's numbers only grow (as MemoryStore's, memory.rs
-- next_room_seq_base) and rooms that come and go do not pile up.

local P = ARGV[1]
local SEATS = tonumber(ARGV[2])
local changes = cjson.decode(ARGV[3])
local MAX_ATTRS = tonumber(ARGV[4])
local ATTR_TTL = tonumber(ARGV[5])
local LOG = cjson.decode(ARGV[6] or '[]')
local HIST_SIZE = tonumber(ARGV[7] or '200')
local HIST_TTL = tonumber(ARGV[8] or '120000')
local POS_TTL = tonumber(ARGV[9] or '86400000')
-- Webhook events (issue 16): ARGV[10] the stream (P webhooks:events; ''
-- for none), ARGV[11] the node, ARGV[12] the cause (action, disconnect,
-- kick: the reason of exits, freed seats and ended calls), ARGV[13] the
-- trim threshold (MINID). Every fact but occupied/vacated (which wait for
-- events.vacated_delay in the node) is appended as one entry {e = event
-- JSON}, in the batch's own step.
local EV_STREAM = ARGV[10] or ''
local EV_NODE = ARGV[11] or ''
local EV_CAUSE = ARGV[12] or 'action'
local EV_MINID = ARGV[13] or '0-0'
local EV_NAMES = {
  entered = 'room.entered', exited = 'room.exited', seat_taken = 'seat.taken',
  seat_freed = 'seat.freed', call_started = 'call.started', call_ended = 'call.ended',
}
local EV_REASON = { exited = true, seat_freed = true, call_ended = true }
-- ARGV[14] events.vacated_delay in ms: an emptied room's report waits
-- that long under P vacancy:<channel> (its room_seq), which the node
-- turns into room.vacated (webhooks outbox) unless an entry deletes it
-- first, which also drops that entry's room.occupied: a quick return does
-- not flap, whichever nodes the leave and the entry ran on.
local EV_VACANCY = tonumber(ARGV[14] or '0')
local OCC_NAMES = { occupied = 'room.occupied', vacated = 'room.vacated' }

local member, member_dirty = {}, {}
local rooms, touched = {}, {}
local calls, calls_dirty = {}, {}
local kv, kv_order = {}, {}
-- What the batch changed (issue 16), in order: {kind, ch, user, seat,
-- peer, room_id}; numbered per room (P roomseq:<channel>) once it passed.
local facts = {}
local function fact(kind, ch, user, seat, peer, room_id)
  facts[#facts + 1] = { kind, ch, user or '', seat or '', peer or '', room_id or '' }
end
local function refuse(kind, reason)
  error({ kind = kind, reason = reason })
end

local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local MAX_TTL = 30 * 24 * 3600 * 1000
-- How long a room's fact counter outlives its last fact (memory.rs
-- ROOM_SEQ_IDLE_MS).
local ROOMSEQ_TTL = 24 * 3600 * 1000

-- The entry at plugin/key as the batch sees it: {value|false, version, exp}.
local function kv_of(plugin, key)
  local id = plugin .. '\0' .. key
  local e = kv[id]
  if e == nil then
    local v = redis.call('HGET', P .. 'kv:' .. plugin, key)
    local ver = tonumber(redis.call('HGET', P .. 'kvver:' .. plugin, key) or '0')
    local exp = redis.call('HGET', P .. 'kvexp:' .. plugin, key)
    exp = exp and tonumber(exp) or false
    if exp and exp <= NOW then v, ver, exp = false, 0, false end
    if not v then ver = 0 end
    e = { plugin = plugin, key = key, value = v, version = ver, exp = exp, dirty = false }
    kv[id] = e
    kv_order[#kv_order + 1] = id
  end
  return e
end

local function check_ttl(ttl)
  if ttl == nil or ttl == cjson.null then return nil end
  if ttl < 1 then refuse('invalid', 'kv ttl must be at least 1 ms') end
  if ttl > MAX_TTL then
    refuse('invalid', 'kv ttl is over the maximum ' .. string.format('%d', MAX_TTL) .. ' ms (30 days)')
  end
  return ttl
end

-- Version counters, read once and written only if the batch passes.
local kvseq = {}
local function kv_write(e, value, exp)
  local seq = kvseq[e.plugin]
  if seq == nil then
    seq = tonumber(redis.call('GET', P .. 'kvseq:' .. e.plugin) or '0')
  end
  seq = seq + 1
  kvseq[e.plugin] = seq
  e.value = value
  e.exp = exp
  e.version = seq
  e.dirty = true
end

-- Timers as the batch sees them: member -> {old = stored|false, cur =
-- after the batch so far|false}; counts of pending timers per plugin
-- ('p:' .. plugin) and room ('r:' .. channel), loaded once, then adjusted.
local timers, timer_order, timer_counts = {}, {}, {}
local MIN_DELAY, MAX_DELAY = 100, 24 * 3600 * 1000

local function timer_of(plugin, key)
  local m = plugin .. '\0' .. key
  local e = timers[m]
  if e == nil then
    local data = redis.call('HGET', P .. 'timerdata', m)
    local old = data and cjson.decode(data) or false
    if old and old.ch == cjson.null then old.ch = nil end
    e = { m = m, plugin = plugin, key = key, old = old, cur = old, dirty = false }
    timers[m] = e
    timer_order[#timer_order + 1] = m
  end
  return e
end

local function timer_count(kind, name)
  local id = kind .. name
  local c = timer_counts[id]
  if c == nil then
    if kind == 'p:' then
      c = redis.call('SCARD', P .. 'timerkeys:' .. name)
    else
      c = redis.call('SCARD', P .. 'roomtimers:' .. name)
    end
    timer_counts[id] = c
  end
  return c
end

local function timer_adjust(kind, name, d)
  timer_counts[kind .. name] = timer_count(kind, name) + d
end

local function drop_timer(e)
  if e.cur then
    timer_adjust('p:', e.plugin, -1)
    if e.cur.ch then timer_adjust('r:', e.cur.ch, -1) end
  end
  e.cur = false
  e.dirty = true
end

local function set_timer(c)
  if c.delay < MIN_DELAY or c.delay > MAX_DELAY then
    refuse('invalid', 'timer delay ' .. string.format('%d', c.delay) .. ' ms is outside 100 ..= 86400000 ms')
  end
  local e = timer_of(c.plugin, c.key)
  drop_timer(e)
  timer_adjust('p:', c.plugin, 1)
  if timer_count('p:', c.plugin) > c.max_plugin then
    refuse('conflict', 'plugin ' .. c.plugin .. ' already has ' .. string.format('%d', c.max_plugin)
      .. ' pending timers (plugins.max_timers_per_plugin)')
  end
  local ch = nil
  if c.channel ~= nil and c.channel ~= cjson.null then ch = c.channel end
  if ch then
    timer_adjust('r:', ch, 1)
    if timer_count('r:', ch) > c.max_room then
      refuse('conflict', 'room ' .. ch .. ' already has ' .. string.format('%d', c.max_room)
        .. ' pending timers (plugins.max_timers_per_room)')
    end
  end
  e.cur = { p = c.plugin, k = c.key, payload = c.payload, ch = ch,
            due = string.format('%d', NOW + c.delay) }
end

local function write_timers()
  for _, m in ipairs(timer_order) do
    local e = timers[m]
    if e.dirty then
      if e.old then
        redis.call('ZREM', P .. 'timers', m)
        redis.call('HDEL', P .. 'timerdata', m)
        redis.call('SREM', P .. 'timerkeys:' .. e.plugin, e.key)
        if e.old.ch then redis.call('SREM', P .. 'roomtimers:' .. e.old.ch, m) end
      end
      if e.cur then
        redis.call('ZADD', P .. 'timers', e.cur.due, m)
        redis.call('HSET', P .. 'timerdata', m, cjson.encode(e.cur))
        redis.call('SADD', P .. 'timerkeys:' .. e.plugin, e.key)
        if e.cur.ch then redis.call('SADD', P .. 'roomtimers:' .. e.cur.ch, m) end
      end
    end
  end
end

local function member_of(u)
  local c = member[u]
  if c == nil then
    c = redis.call('GET', P .. 'member:' .. u)
    member[u] = c
  end
  return c
end

local function set_member(u, c)
  member[u] = c
  member_dirty[u] = true
end

local function empty(r)
  r.exists, r.count, r.room_id, r.nseats, r.meta = false, 0, false, 0, false
  r.seats, r.dirty, r.ops, r.adds = {}, {}, {}, {}
end

local function parse_seat(v)
  local st, mic, user = string.match(v, '^(%d+),(%d+),(.*)$')
  return { status = tonumber(st), mic = tonumber(mic), user = (user ~= '' and user) or false }
end

local function room(ch)
  local r = rooms[ch]
  if r then return r end
  r = { reset = false }
  empty(r)
  local h = redis.call('HGETALL', P .. 'room:' .. ch)
  if #h > 0 then
    r.exists = true
    for i = 1, #h, 2 do
      local f, v = h[i], h[i + 1]
      if f == 'room_id' then
        r.room_id = v
      elseif f == 'seats' then
        r.nseats = tonumber(v)
      elseif string.sub(f, 1, 2) == 's:' then
        r.seats[tonumber(string.sub(f, 3))] = parse_seat(v)
      end
    end
    r.count = redis.call('ZCARD', P .. 'members:' .. ch)
  end
  rooms[ch] = r
  touched[#touched + 1] = ch
  return r
end

local function seat_of(r, id)
  return r.seats[id] or { status = 0, mic = 0, user = false }
end

local function put_seat(r, id, s)
  r.seats[id] = s
  r.dirty[id] = true
end

local function free_user_seat(r, u)
  for id = 1, r.nseats do
    if seat_of(r, id).user == u then
      put_seat(r, id, { status = 0, mic = 0, user = false })
      return id
    end
  end
  return false
end

local function leave(u)
  local ch = member_of(u)
  if not ch then return end
  set_member(u, false)
  local r = room(ch)
  if not r.exists then return end
  r.ops[u] = 'rem'
  r.count = r.count - 1
  local freed = free_user_seat(r, u)
  if freed then fact('seat_freed', ch, u, freed) end
  fact('exited', ch, u)
  if r.count <= 0 then
    -- The last member left: the room is gone (and starts afresh if
    -- someone joins it later in this batch).
    empty(r)
    r.reset = true
    fact('vacated', ch)
  end
end

local function join(u, ch, room_id)
  if member_of(u) == ch then return end
  leave(u)
  local r = room(ch)
  if not r.exists then
    r.exists, r.room_id, r.nseats, r.meta = true, room_id, SEATS, true
    fact('occupied', ch, nil, nil, nil, room_id)
  end
  r.ops[u] = 'add'
  r.adds[#r.adds + 1] = u
  r.count = r.count + 1
  set_member(u, ch)
  fact('entered', ch, u, nil, nil, r.room_id)
end

local function require_member(u, ch)
  if member_of(u) ~= ch then
    refuse('not_allowed', 'user ' .. u .. ' is not in room ' .. ch)
  end
end

local function room_mut(ch)
  local r = room(ch)
  if not r.exists then refuse('not_allowed', 'nobody is in room ' .. ch) end
  return r
end

local function check_seat(r, id)
  if id < 1 or id > r.nseats then
    refuse('invalid', 'no seat ' .. id .. ' in this room')
  end
end

local function take_seat(ch, id, u)
  require_member(u, ch)
  local r = room_mut(ch)
  check_seat(r, id)
  local s = seat_of(r, id)
  if s.user == u then
    refuse('conflict', 'user ' .. u .. ' already holds seat ' .. id)
  end
  if s.status ~= 0 then refuse('conflict', 'seat ' .. id .. ' is not free') end
  local freed = free_user_seat(r, u)
  if freed then fact('seat_freed', ch, u, freed) end
  put_seat(r, id, { status = 1, mic = 1, user = u })
  fact('seat_taken', ch, u, id)
end

local function free_seat(ch, u)
  require_member(u, ch)
  local r = room_mut(ch)
  local freed = free_user_seat(r, u)
  if not freed then
    refuse('not_allowed', 'user ' .. u .. ' holds no seat')
  end
  fact('seat_freed', ch, u, freed)
end

local function set_seat(ch, id, status, mic)
  if status == 1 or mic > 1 then
    refuse('invalid', 'seat status ' .. status .. ' / microphone ' .. mic)
  end
  local r = room_mut(ch)
  check_seat(r, id)
  local s = seat_of(r, id)
  if s.status == 1 then refuse('conflict', 'seat ' .. id .. ' is occupied') end
  put_seat(r, id, { status = status, mic = mic, user = s.user })
end

local function call_of(u)
  local c = calls[u]
  if c == nil then
    local h = redis.call('HMGET', P .. 'call:' .. u, 'peer', 'channel')
    if h[1] then c = { peer = h[1], channel = h[2] } else c = false end
    calls[u] = c
  end
  return c
end

local function set_call(u, c)
  calls[u] = c
  calls_dirty[u] = true
end

local function start_call(u, receiver, ch)
  if u == receiver then refuse('invalid', 'a call needs two users') end
  -- One reason for both users: a caller never learns which of them is
  -- busy (issue 21: refusals do not reveal another user's call state).
  for _, x in ipairs({ u, receiver }) do
    if call_of(x) then refuse('conflict', 'a user of the call is already in one') end
  end
  set_call(u, { peer = receiver, channel = ch })
  set_call(receiver, { peer = u, channel = ch })
  fact('call_started', ch, u, nil, receiver)
end

local function end_call(u)
  local c = call_of(u)
  if c then
    set_call(u, false)
    set_call(c.peer, false)
    fact('call_ended', c.channel, u, nil, c.peer)
  end
end

-- Room attributes as the batch sees them: {entries, count, version, dirty}.
local attrs, attrs_order = {}, {}
local settle, settle_order = {}, {}
local function attrs_of(ch)
  local a = attrs[ch]
  if a == nil then
    a = { entries = {}, count = 0, version = 0, dirty = false }
    local h = redis.call('HGETALL', P .. 'attrs:' .. ch)
    for i = 1, #h, 2 do
      if h[i] == '' then
        a.version = tonumber(h[i + 1])
      else
        a.entries[h[i]] = h[i + 1]
        a.count = a.count + 1
      end
    end
    attrs[ch] = a
    attrs_order[#attrs_order + 1] = ch
  end
  return a
end

local function to_settle(ch)
  if not settle[ch] then
    settle[ch] = true
    settle_order[#settle_order + 1] = ch
  end
end

-- The attributes to write, after checking the condition against the
-- version they had when the batch started.
local function attrs_for_write(ch, if_version)
  local a = attrs_of(ch)
  if if_version ~= nil and if_version ~= cjson.null then
    if a.version ~= tonumber(if_version) then
      refuse('stale', 'room ' .. ch .. ' attributes are at version '
        .. string.format('%d', a.version) .. ', not ' .. if_version)
    end
  end
  a.dirty = true
  to_settle(ch)
  return a
end

local function set_attr(ch, key, value, if_version)
  local a = attrs_for_write(ch, if_version)
  if value ~= nil and value ~= cjson.null then
    if a.entries[key] == nil then
      if a.count >= MAX_ATTRS then
        refuse('conflict', 'room ' .. ch .. ' already has ' .. string.format('%d', MAX_ATTRS)
          .. ' attributes, the most allowed')
      end
      a.count = a.count + 1
    end
    a.entries[key] = value
  elseif a.entries[key] ~= nil then
    a.entries[key] = nil
    a.count = a.count - 1
  end
end

local function run()
  for _, c in ipairs(changes) do
    local op = c.op
    if op == 'join' then
      local old = member_of(c.user)
      if old then to_settle(old) end
      join(c.user, c.channel, c.room_id)
      to_settle(c.channel)
    elseif op == 'leave' then
      require_member(c.user, c.channel)
      leave(c.user)
      to_settle(c.channel)
    elseif op == 'set_attr' then
      set_attr(c.channel, c.key, c.value, c.if_version)
    elseif op == 'clear_attrs' then
      local a = attrs_for_write(c.channel, c.if_version)
      a.entries, a.count = {}, 0
    elseif op == 'take_seat' then
      take_seat(c.channel, c.seat, c.user)
    elseif op == 'free_seat' then
      free_seat(c.channel, c.user)
    elseif op == 'set_seat' then
      set_seat(c.channel, c.seat, c.status, c.mic)
    elseif op == 'start_call' then
      start_call(c.user, c.receiver, c.channel)
    elseif op == 'end_call' then
      end_call(c.user)
    elseif op == 'user_offline' then
      -- A condition (StateChange::UserOffline): the user is connected
      -- nowhere now, or nothing of the batch is applied.
      if redis.call('EXISTS', P .. 'presence:' .. c.user) == 1 then
        refuse('back', c.user)
      end
    elseif op == 'kv_set' then
      kv_write(kv_of(c.plugin, c.key), c.value, false)
    elseif op == 'kv_delete' then
      local e = kv_of(c.plugin, c.key)
      e.value, e.version, e.exp, e.dirty = false, 0, false, true
    elseif op == 'kv_put' then
      local ttl = check_ttl(c.ttl)
      local e = kv_of(c.plugin, c.key)
      if c.if_version ~= nil and c.if_version ~= cjson.null then
        local expected = tonumber(c.if_version)
        if e.version ~= expected then
          refuse('stale', 'kv key `' .. c.key .. '` is at version ' .. string.format('%d', e.version)
            .. ', not ' .. c.if_version)
        end
      end
      kv_write(e, c.value, ttl and (NOW + ttl) or false)
    elseif op == 'kv_incr' then
      local ttl = check_ttl(c.ttl)
      local e = kv_of(c.plugin, c.key)
      local current = 0
      if e.value then
        if not string.match(e.value, '^-?%d+$') or #e.value > 17
          or math.abs(tonumber(e.value)) > 9007199254740991 then
          refuse('conflict', 'kv key `' .. c.key .. '` does not hold an integer')
        end
        current = tonumber(e.value)
      end
      local delta = tonumber(c.delta)
      local sum = current + delta
      -- Lua numbers are doubles: exact up to 2^53 - 1 (MAX_KV_INT).
      local max = 9007199254740991
      if math.abs(current) > max or math.abs(delta) > max or math.abs(sum) > max then
        refuse('conflict', 'kv key `' .. c.key .. '` would overflow')
      end
      kv_write(e, string.format('%d', sum), ttl and (NOW + ttl) or e.exp)
    elseif op == 'set_timer' then
      set_timer(c)
    elseif op == 'cancel_timer' then
      drop_timer(timer_of(c.plugin, c.key))
    else
      refuse('invalid', 'unknown change ' .. tostring(op))
    end
  end
end

local function write_room(ch, r)
  local hk, mk = P .. 'room:' .. ch, P .. 'members:' .. ch
  if r.reset then redis.call('DEL', hk, mk) end
  if not r.exists then return end
  if r.meta then redis.call('HSET', hk, 'room_id', r.room_id, 'seats', r.nseats) end
  for id, _ in pairs(r.dirty) do
    local s = seat_of(r, id)
    if s.status == 0 and s.mic == 0 and not s.user then
      redis.call('HDEL', hk, 's:' .. id)
    else
      redis.call('HSET', hk, 's:' .. id, s.status .. ',' .. s.mic .. ',' .. (s.user or ''))
    end
  end
  for u, op in pairs(r.ops) do
    if op == 'rem' then redis.call('ZREM', mk, u) end
  end
  -- Adds in the order they happened; a user added twice counts at the last.
  local last = {}
  for i, u in ipairs(r.adds) do last[u] = i end
  for i, u in ipairs(r.adds) do
    if last[u] == i and r.ops[u] == 'add' then
      redis.call('ZADD', mk, redis.call('INCR', P .. 'joinseq'), u)
    end
  end
end

-- Written attributes get the next version (or lose their hash when none is
-- left); every settled room's attributes persist while it has members and
-- expire ATTR_TTL from now otherwise.
local function write_attrs()
  local seq = nil
  for _, ch in ipairs(attrs_order) do
    local a = attrs[ch]
    if a.dirty then
      local key = P .. 'attrs:' .. ch
      redis.call('DEL', key)
      if a.count > 0 then
        seq = (seq or tonumber(redis.call('GET', P .. 'attrseq') or '0')) + 1
        local args = { '', string.format('%d', seq) }
        for k, v in pairs(a.entries) do
          args[#args + 1] = k
          args[#args + 1] = v
        end
        redis.call('HSET', key, unpack(args))
      end
    end
  end
  if seq then redis.call('SET', P .. 'attrseq', string.format('%d', seq)) end
  for _, ch in ipairs(settle_order) do
    local r = room(ch)
    if r.exists and r.count > 0 then
      redis.call('PERSIST', P .. 'attrs:' .. ch)
    else
      redis.call('PEXPIRE', P .. 'attrs:' .. ch, ATTR_TTL)
    end
  end
end

local function write()
  write_attrs()
  for u, _ in pairs(member_dirty) do
    if member[u] then
      redis.call('SET', P .. 'member:' .. u, member[u])
    else
      redis.call('DEL', P .. 'member:' .. u)
    end
  end
  for _, ch in ipairs(touched) do write_room(ch, rooms[ch]) end
  for u, _ in pairs(calls_dirty) do
    local c = calls[u]
    if c then
      redis.call('HSET', P .. 'call:' .. u, 'peer', c.peer, 'channel', c.channel)
    else
      redis.call('DEL', P .. 'call:' .. u)
    end
  end
  for plugin, seq in pairs(kvseq) do
    redis.call('SET', P .. 'kvseq:' .. plugin, string.format('%d', seq))
  end
  for _, id in ipairs(kv_order) do
    local e = kv[id]
    if e.dirty then
      local p, k = e.plugin, e.key
      if e.value then
        redis.call('HSET', P .. 'kv:' .. p, k, e.value)
        redis.call('HSET', P .. 'kvver:' .. p, k, e.version)
        if e.exp then
          redis.call('HSET', P .. 'kvexp:' .. p, k, string.format('%d', e.exp))
        else
          redis.call('HDEL', P .. 'kvexp:' .. p, k)
        end
      else
        redis.call('HDEL', P .. 'kv:' .. p, k)
        redis.call('HDEL', P .. 'kvver:' .. p, k)
        redis.call('HDEL', P .. 'kvexp:' .. p, k)
      end
    end
  end
end

local ok, err = pcall(run)
if not ok then
  if type(err) == 'table' then return { err.kind, err.reason } end
  error(err)
end
write()
write_timers()

-- Logs each notification under its stream's next seq and stamps its
-- frame as history::stamp does: `,"stream":"room"|"user","epoch":"E","seq":N`
-- before the last `}`.
local function log_one(stream, frame)
  local pk = P .. 'histpos:' .. stream
  local hk = P .. 'hist:' .. stream
  local epoch = redis.call('HGET', pk, 'epoch')
  if not epoch then
    epoch = string.format('%x', NOW) .. string.format('%x', redis.call('INCR', P .. 'histepoch'))
    redis.call('HSET', pk, 'epoch', epoch, 'seq', 0)
    redis.call('DEL', hk)
  end
  local seq = redis.call('HINCRBY', pk, 'seq', 1)
  local body = string.sub(frame, 1, -2)
  local sep = ','
  if body == '{' then sep = '' end
  local kind = 'user'
  if string.sub(stream, 1, 2) == 'r:' then kind = 'room' end
  local stamped = body .. sep .. '"stream":"' .. kind .. '","epoch":"' .. epoch .. '","seq":' .. string.format('%d', seq) .. '}'
  redis.call('RPUSH', hk, string.format('%d', seq) .. ' ' .. string.format('%d', NOW) .. ' ' .. stamped)
  redis.call('LTRIM', hk, -HIST_SIZE, -1)
  redis.call('PEXPIRE', hk, HIST_TTL)
  redis.call('PEXPIRE', pk, POS_TTL)
  return epoch, seq, stamped
end

-- The event of fact f numbered seq, as the node's serde writes it: fields
-- in the same order, absent ones left out, ids as JSON numbers.
local function event_json(f, seq)
  local kind = f[1]
  local n = redis.call('INCR', P .. 'eventseq')
  local id = string.sub(redis.sha1hex(P .. EV_NODE .. ':' .. NOW .. ':' .. n), 1, 32)
  local parts = { '{"event_id":"', id, '","event":"', EV_NAMES[kind] or OCC_NAMES[kind], '","node":',
    cjson.encode(EV_NODE), ',"ts_ms":', string.format('%d', NOW) }
  local function add(s) parts[#parts + 1] = s end
  if f[3] ~= '' then add(',"user_id":' .. tostring(f[3])) end
  add(',"channel_name":' .. cjson.encode(f[2]) .. ',"room_seq":' .. seq)
  if f[6] ~= '' then add(',"room_id":' .. tostring(f[6])) end
  if f[4] ~= '' then add(',"seat_id":' .. tostring(f[4])) end
  if f[5] ~= '' then
    if kind == 'call_started' then add(',"receiver_id":') else add(',"peer_id":') end
    add(tostring(f[5]))
  end
  if EV_REASON[kind] then add(',"reason":"' .. EV_CAUSE .. '"') end
  add('}')
  return table.concat(parts)
end

local out = { 'ok', string.format('%d', #facts) }
for _, f in ipairs(facts) do
  for i = 1, 6 do out[#out + 1] = tostring(f[i]) end
  local seq_key = P .. 'roomseq:' .. f[2]
  if redis.call('EXISTS', seq_key) == 0 then
    redis.call('SET', seq_key, string.format('%d', NOW * 1000))
  end
  local seq = string.format('%d', redis.call('INCR', seq_key))
  redis.call('PEXPIRE', seq_key, ROOMSEQ_TTL)
  out[#out + 1] = seq
  if EV_STREAM ~= '' then
    local kind, vacancy = f[1], P .. 'vacancy:' .. f[2]
    local emit = EV_NAMES[kind] ~= nil
    if kind == 'occupied' then
      emit = redis.call('DEL', vacancy) == 0
    elseif kind == 'vacated' then
      emit = EV_VACANCY <= 0
      if not emit then redis.call('SET', vacancy, seq, 'PX', EV_VACANCY * 2 + 60000) end
    end
    if emit then
      redis.call('XADD', EV_STREAM, 'MINID', '~', EV_MINID, '*', 'e', event_json(f, seq))
    end
  end
end
for _, entry in ipairs(LOG) do
  local epoch, seq, stamped = log_one(entry.s, entry.f)
  out[#out + 1] = epoch
  out[#out + 1] = string.format('%d', seq)
  out[#out + 1] = stamped
end
return out
