-- GCRA, one call per decision. Mirrors `gcra::step` in Rust, in integer microseconds.
-- KEYS[1]: the key. ARGV[1]: increment (cost * interval). ARGV[2]: tolerance (burst * interval).
-- ARGV[3]: optional "now" override, used only by tests comparing with the Rust core;
-- production calls omit it and the clock is Redis TIME.
local increment = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local new_tat = tat + increment
local diff = new_tat - now
if diff <= tolerance then
  -- The key expires once it is fully replenished: no key without a TTL, ever.
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(diff / 1000))
  return {1, diff, 0}
end
return {0, tat - now, diff - tolerance}
