-- Presence of one user (RedisStore::set_online / set_offline).
--
-- ARGV[1] key prefix, ARGV[2] "online" or "offline", ARGV[3] user,
-- ARGV[4] node. P presence:<user> names the node holding the user's
-- connection; P node_users:<node> lists the users a node holds, so that
-- when a node dies a survivor knows whom to disconnect. `online` returns
-- the node the user was on before (false if none).

local P, what, u, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = P .. 'presence:' .. u
local prev = redis.call('GET', key)
if what == 'online' then
  redis.call('SET', key, node)
  if prev and prev ~= node then
    redis.call('SREM', P .. 'node_users:' .. prev, u)
  end
  redis.call('SADD', P .. 'node_users:' .. node, u)
  return prev
end
if prev == node then redis.call('DEL', key) end
redis.call('SREM', P .. 'node_users:' .. node, u)
return false
