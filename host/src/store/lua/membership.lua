-- A user's room and that room's hash, read in one step
-- (RedisStore::membership_of). ARGV[1] key prefix, ARGV[2] user.
-- Returns false, or {channel, {field, value, ...}}.

local P, u = ARGV[1], ARGV[2]
local ch = redis.call('GET', P .. 'member:' .. u)
if not ch then return false end
return { ch, redis.call('HGETALL', P .. 'room:' .. ch) }
