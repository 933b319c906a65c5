-- wrk script: POST an OpenAI chat completion with the gateway's headers.
-- Configured by the environment (bench/bench.py sets it):
--   BENCH_API_KEY      gateway key ("Authorization: Bearer ..."); empty = no header
--   BENCH_FEATURE  X-Gateway-Feature (default "bench")
--   BENCH_MODEL    model name (default "bench-fast")
--   BENCH_PROMPT   "unique" (a new prompt per request: always a cache miss) or "fixed"
--   BENCH_CACHE_TTL X-Gateway-Cache-TTL; "" = header not sent, "0" = cache bypass
--   BENCH_STREAM   "1" for "stream": true with include_usage
--   BENCH_PATH     request path (default /v1/chat/completions)
local key = os.getenv("BENCH_API_KEY") or ""
local feature = os.getenv("BENCH_FEATURE") or "bench"
local model = os.getenv("BENCH_MODEL") or "bench-fast"
local unique = (os.getenv("BENCH_PROMPT") or "unique") == "unique"
local ttl = os.getenv("BENCH_CACHE_TTL") or ""
local stream = os.getenv("BENCH_STREAM") == "1"
local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"

local headers = { ["Content-Type"] = "application/json" }
if key ~= "" then headers["Authorization"] = "Bearer " .. key end
if feature ~= "" then headers["X-Gateway-Feature"] = feature end
if ttl ~= "" then headers["X-Gateway-Cache-TTL"] = ttl end

local tail = '"}],"max_tokens":64'
if stream then tail = tail .. ',"stream":true,"stream_options":{"include_usage":true}' end
tail = tail .. "}"
local head = '{"model":"' .. model .. '","messages":[{"role":"user","content":"'

local threads, thread_id = {}, 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end

local fixed_body = head .. "Say hello to the benchmark, please." .. tail
local counter = 0
local nonce = tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000))

function init(args)
  math.randomseed(os.time() + (tid or 0))
  nonce = tostring(os.time()) .. "-" .. tostring(tid or 0) .. "-" .. tostring(math.random(1, 1000000000))
end

request = function()
  if not unique then
    return wrk.format("POST", path, headers, fixed_body)
  end
  counter = counter + 1
  local body = head .. "Benchmark prompt " .. nonce .. "-" .. counter .. ", say hello." .. tail
  return wrk.format("POST", path, headers, body)
end
