import sys

from lkscale.cli import main

sys.exit(main())
