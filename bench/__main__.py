"""python -m bench -> bench.cli (one bounded run, results in bench/results/)."""

from bench.cli import main

raise SystemExit(main())
