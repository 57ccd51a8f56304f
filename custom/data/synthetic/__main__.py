import sys

from custom.data.synthetic.cli import main

sys.exit(main())
