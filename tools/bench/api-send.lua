-- wrk script for tools/bench-api.sh: POST /api/notifications/send with a
-- bearer key from the environment, cycling through 1000 recipients.
local key = os.getenv("BENCH_API_KEY")
local n = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

request = function()
	n = n + 1
	local body = string.format(
	    '{"target_user":"u%d","notification_type":"info","content":"bench message %d"}',
	    n % 1000, n)
	return wrk.format(nil, "/api/notifications/send", nil, body)
end
