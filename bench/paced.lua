-- Open-loop arrivals for wrk: requests start at a fixed mean rate, whatever the latency.
--
-- Each wrk thread keeps one schedule of exponentially spaced start times (a Poisson
-- process at the rate given as the script's argument) and every request waits for the
-- next slot. wrk starts its latency clock when the request is written, after the wait.
-- hey -q is not this: its workers tick in phase, so they arrive in bursts of -c requests.
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clock_id, paced_timespec *now);
]])
local CLOCK_MONOTONIC = 1
local clock = ffi.new("paced_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local mean_gap_ms = 1000
local next_start = nil

function init(args)
  mean_gap_ms = 1000 / tonumber(args[1]) -- args[1]: requests per second for this thread
  math.randomseed(math.floor(now_ms() * 1000) % 2147483647)
end

function delay()
  local now = now_ms()
  if next_start == nil then
    next_start = now + math.random() * mean_gap_ms
  end
  next_start = next_start - math.log(1 - math.random()) * mean_gap_ms
  local wait = next_start - now
  if wait < 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end
