import sys

from tidegate_devenv.cli import main

sys.exit(main())
