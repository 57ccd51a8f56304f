import sys

from custom.report.cli import main

sys.exit(main())
