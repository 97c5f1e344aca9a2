-- GCRA for one key: one call decides one or more requests, in order, at one instant, exactly
-- as that many single decisions at that instant would. Mirrors `gcra::step` in Rust, in
-- integer microseconds (exact in Lua's doubles below 2^53).
-- KEYS[1]: the key.
-- ARGV[1]: "now" in microseconds, or '' for Redis TIME (production; tests comparing with the
-- Rust core pass their clock).
-- Then one triple per run of identical decisions, in arrival order: ARGV[3r-1] count,
-- ARGV[3r] increment (cost * interval), ARGV[3r+1] tolerance (burst * interval).
-- Returns two numbers per run: how many of its decisions were admitted (the first ones: with
-- one increment, once one is refused so are the rest), and the TAT before the run, relative to
-- now. The caller derives each decision's reset and retry times from these.
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
for i = 2, #ARGV - 2, 3 do
  local count = tonumber(ARGV[i])
  local increment = tonumber(ARGV[i + 1])
  local tolerance = tonumber(ARGV[i + 2])
  local room = tolerance - (tat - now)
  -- k = floor(room / increment), corrected for the rounding of the division.
  local k = 0
  if room >= increment then
    k = math.floor(room / increment)
    while k * increment > room do
      k = k - 1
    end
    while (k + 1) * increment <= room do
      k = k + 1
    end
  end
  if k > count then
    k = count
  end
  out[#out + 1] = k
  out[#out + 1] = tat - now
  if k > 0 then
    tat = tat + k * increment
    admitted = true
  end
end
if admitted then
  -- The key expires once it is fully replenished: no key without a TTL, ever.
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
return out
