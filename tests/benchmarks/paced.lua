-- Paces wrk to a fixed rate (wrk -s paced.lua URL -- RATE): one schedule of evenly spaced
-- send times for all the thread's connections; before each request a connection takes
-- the next free time and waits for it. So the rate holds whatever the latency is, as long
-- as a connection is free when its time comes (wrk2's idea without its own clock; wrk
-- times each request from when it is sent). A schedule more than a second behind starts
-- again from now rather than bursting to catch up.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } pf_timespec;
int clock_gettime(int clock, pf_timespec *ts);
]]
local ts = ffi.new("pf_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval
local slot

function init(args)
  interval = 1000 / tonumber(args[1])
end

function delay()
  local now = now_ms()
  if slot == nil or slot < now - 1000 then
    slot = now
  end
  local wait = slot - now
  slot = slot + interval
  if wait < 0 then
    return 0
  end
  return wait
end
