-- Claiming due plugin timers (RedisStore::claim_due_timers).
--
-- ARGV[1] key prefix, ARGV[2] "claim", ARGV[3] the most timers to claim;
-- or ARGV[2] "requeue", ARGV[3] a claimed timer's JSON (with `a`, its
-- attempt, already counted up), ARGV[4] the delay in ms.
-- Keys (P = prefix, written by apply.lua): P timers zset "<plugin>\0<key>"
-- by due time (unix ms); P timerdata hash member -> JSON {p, k, payload,
-- ch, due}; P timerkeys:<plugin> set of the plugin's pending keys;
-- P roomtimers:<channel> set of the members naming that room. `due` is
-- when the timer was first due; the zset's score is when it fires next
-- (later than `due` once put back).
--
-- Every timer due at Redis's own time is removed from all of them and
-- returned (as its JSON), earliest first. Redis runs a script alone, so
-- of several nodes claiming at once exactly one gets a given timer.

local P = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Requeue: a claimed timer whose event could not run goes back, unless
-- its plugin set the same key since the claim (that newer timer wins).
-- Bounds are not checked again: the timer was counted when it was set.
if ARGV[2] == 'requeue' then
  local d = cjson.decode(ARGV[3])
  local m = d.p .. '\0' .. d.k
  if redis.call('HEXISTS', P .. 'timerdata', m) == 1 then return 0 end
  redis.call('ZADD', P .. 'timers', now + tonumber(ARGV[4]), m)
  redis.call('HSET', P .. 'timerdata', m, ARGV[3])
  redis.call('SADD', P .. 'timerkeys:' .. d.p, d.k)
  if d.ch and d.ch ~= cjson.null then
    redis.call('SADD', P .. 'roomtimers:' .. d.ch, m)
  end
  return 1
end

if ARGV[2] ~= 'claim' then return redis.error_reply('unknown timers command') end
local limit = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', P .. 'timers', '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', P .. 'timers', m)
  local data = redis.call('HGET', P .. 'timerdata', m)
  redis.call('HDEL', P .. 'timerdata', m)
  if data then
    local d = cjson.decode(data)
    redis.call('SREM', P .. 'timerkeys:' .. d.p, d.k)
    if d.ch and d.ch ~= cjson.null then
      redis.call('SREM', P .. 'roomtimers:' .. d.ch, m)
    end
    out[#out + 1] = data
  end
end
return out
