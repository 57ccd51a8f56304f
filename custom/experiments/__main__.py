import sys

from custom.errors import install_excepthook
from custom.experiments.cli import main

install_excepthook()
sys.exit(main())
