import sys

from grunet.cli import main

sys.exit(main())
