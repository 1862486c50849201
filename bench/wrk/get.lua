-- GET the URL given to wrk (library files), reporting through report.lua.
dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/report.lua")
