import sys

from l3se.cli import main

sys.exit(main())
