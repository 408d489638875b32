import sys

from dpo_operator.cli import main

sys.exit(main())
