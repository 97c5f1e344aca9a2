-- GCRA for one key: one call decides one or more requests, in order, at one instant.
-- Mirrors `gcra::step` in Rust, in integer microseconds; a call with n decisions takes exactly
-- the decisions n calls would take at the same instant, one after another.
-- KEYS[1]: the key.
-- ARGV[1]: "now" in microseconds, or '' for Redis TIME (production; tests comparing with the
-- Rust core pass their clock).
-- ARGV[2k], ARGV[2k+1] (k = 1..n): increment (cost * interval) and tolerance
-- (burst * interval) of the k-th decision.
-- Returns 3 numbers per decision: allowed (1/0), reset after, retry after (microseconds).
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local out = {}
local admitted = false
for i = 2, #ARGV - 1, 2 do
  local increment = tonumber(ARGV[i])
  local tolerance = tonumber(ARGV[i + 1])
  local diff = tat + increment - now
  if diff <= tolerance then
    tat = tat + increment
    admitted = true
    out[#out + 1] = 1
    out[#out + 1] = diff
    out[#out + 1] = 0
  else
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = diff - tolerance
  end
end
if admitted then
  -- The key expires once it is fully replenished: no key without a TTL, ever.
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
return out
