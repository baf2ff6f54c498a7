-- Reads of the notification history (issue 17; RedisStore::history_since
-- and RedisStore::room_snapshot). Appends are in apply.lua, in the same
-- script as the batch they belong to.
--
-- ARGV[1] key prefix, ARGV[2] mode, ARGV[3] stream (`r:<channel>` or
-- `u:<user>`), ARGV[4] how long a position outlives its last append, ms.
-- Keys (P = prefix): P histpos:<stream> hash {epoch, seq}; P hist:<stream>
-- list of "<seq> <unix ms> <stamped frame>", oldest first, capped at
-- recovery.history_size and expiring history_ttl after the last append
-- (P histpos later, see apply.lua).
-- A stream without P histpos gets a new epoch at seq 0 here, so the
-- notifications after a snapshot follow it in the same epoch.
--
-- mode `since`: returns {epoch, seq, entry...} (every held entry; the
-- caller keeps those after the client's seq and younger than the TTL).
-- mode `snapshot` (ARGV[5] channel, ARGV[6] member limit): returns
-- {'none'} for a room nobody is in, else {epoch, seq, n, room hash
-- fields and values (2n)..., member count, m, members (m)..., attribute
-- fields and values...}, all read at one instant.

local P = ARGV[1]
local MODE = ARGV[2]
local S = ARGV[3]
local TTL = tonumber(ARGV[4])

local function position()
  local pk = P .. 'histpos:' .. S
  local pos = redis.call('HMGET', pk, 'epoch', 'seq')
  if pos[1] then return pos[1], pos[2] or '0' end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local epoch = string.format('%x', now) .. string.format('%x', redis.call('INCR', P .. 'histepoch'))
  redis.call('HSET', pk, 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', pk, TTL)
  return epoch, '0'
end

if MODE == 'since' then
  local epoch, seq = position()
  local out = { epoch, seq }
  for _, e in ipairs(redis.call('LRANGE', P .. 'hist:' .. S, 0, -1)) do
    out[#out + 1] = e
  end
  return out
end

-- snapshot
local CH = ARGV[5]
local LIMIT = tonumber(ARGV[6])
local room = redis.call('HGETALL', P .. 'room:' .. CH)
if #room == 0 then return { 'none' } end
local epoch, seq = position()
local out = { epoch, seq, tostring(#room / 2) }
for _, v in ipairs(room) do out[#out + 1] = v end
local mk = P .. 'members:' .. CH
out[#out + 1] = tostring(redis.call('ZCARD', mk))
local members = {}
if LIMIT > 0 then members = redis.call('ZRANGE', mk, 0, LIMIT - 1) end
out[#out + 1] = tostring(#members)
for _, v in ipairs(members) do out[#out + 1] = v end
for _, v in ipairs(redis.call('HGETALL', P .. 'attrs:' .. CH)) do out[#out + 1] = v end
return out
