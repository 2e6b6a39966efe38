import sys

from leaf.cli import main

sys.exit(main())
