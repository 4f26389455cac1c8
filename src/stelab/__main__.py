import sys

from stelab.cli import main

sys.exit(main())
