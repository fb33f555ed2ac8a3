import sys

from benchmarks.peers.harness import main

sys.exit(main())
