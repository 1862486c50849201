-- POST /gateway/sessions/session with a JSON session description (the token route).
-- The body is FCSDK's sample session description; the router rewrites urlSchemeDetails.
dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"webAppId":"webapp-id-example","allowedOrigins":["https://shop.example.com"],' ..
  '"timeout":1,"urlSchemeDetails":{"secure":true,"host":"wrong.example.com","port":"8443"}}'
