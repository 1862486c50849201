"""python -m bench -> bench.harness (one bounded run, results in bench/results/)."""

from bench.harness import main

raise SystemExit(main())
