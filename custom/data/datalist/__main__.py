import sys

from custom.data.datalist.cli import main

sys.exit(main())
