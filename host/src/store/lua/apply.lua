-- One batch of state changes, all or nothing (RedisStore::apply).
--
-- ARGV[1] key prefix, ARGV[2] seats of a new room, ARGV[3] the batch as a
-- JSON array. The batch runs on Lua tables loaded lazily from Redis, in
-- order, with exactly the rules of MemoryStore (host/src/store/memory.rs);
-- only when every change passed is anything written. A refusal returns
-- {kind, reason} with kind one of conflict / not_allowed / invalid; success
-- returns {"ok"}. Redis runs a script alone, so two batches on two nodes
-- never interleave: of two `up` for one seat exactly one sees it free.
--
-- Keys (P = prefix): P member:<user> -> channel; P room:<channel> hash
-- {room_id, seats, s:<id> = "status,mic,user"} (free seats absent);
-- P members:<channel> zset user by join sequence (P joinseq);
-- P call:<user> hash {peer, channel}; P kv:<plugin> hash.

local P = ARGV[1]
local SEATS = tonumber(ARGV[2])
local changes = cjson.decode(ARGV[3])

local member, member_dirty = {}, {}
local rooms, touched = {}, {}
local calls, calls_dirty = {}, {}
local kv = {}

local function refuse(kind, reason)
  error({ kind = kind, reason = reason })
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
      return true
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
  free_user_seat(r, u)
  if r.count <= 0 then
    -- The last member left: the room is gone (and starts afresh if
    -- someone joins it later in this batch).
    empty(r)
    r.reset = true
  end
end

local function join(u, ch, room_id)
  if member_of(u) == ch then return end
  leave(u)
  local r = room(ch)
  if not r.exists then
    r.exists, r.room_id, r.nseats, r.meta = true, room_id, SEATS, true
  end
  r.ops[u] = 'add'
  r.adds[#r.adds + 1] = u
  r.count = r.count + 1
  set_member(u, ch)
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
  free_user_seat(r, u)
  put_seat(r, id, { status = 1, mic = 1, user = u })
end

local function free_seat(ch, u)
  require_member(u, ch)
  local r = room_mut(ch)
  if not free_user_seat(r, u) then
    refuse('not_allowed', 'user ' .. u .. ' holds no seat')
  end
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
  for _, x in ipairs({ u, receiver }) do
    if call_of(x) then refuse('conflict', 'user ' .. x .. ' is already in a call') end
  end
  set_call(u, { peer = receiver, channel = ch })
  set_call(receiver, { peer = u, channel = ch })
end

local function end_call(u)
  local c = call_of(u)
  if c then
    set_call(u, false)
    set_call(c.peer, false)
  end
end

local function run()
  for _, c in ipairs(changes) do
    local op = c.op
    if op == 'join' then
      join(c.user, c.channel, c.room_id)
    elseif op == 'leave' then
      require_member(c.user, c.channel)
      leave(c.user)
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
    elseif op == 'kv_set' then
      kv[#kv + 1] = { c.plugin, c.key, c.value }
    elseif op == 'kv_delete' then
      kv[#kv + 1] = { c.plugin, c.key, false }
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

local function write()
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
  for _, e in ipairs(kv) do
    if e[3] then
      redis.call('HSET', P .. 'kv:' .. e[1], e[2], e[3])
    else
      redis.call('HDEL', P .. 'kv:' .. e[1], e[2])
    end
  end
end

local ok, err = pcall(run)
if not ok then
  if type(err) == 'table' then return { err.kind, err.reason } end
  error(err)
end
write()
return { 'ok' }
