"""`python -m gradual_lightning.report <sweep_dir>`: see `gradual_lightning.report.cli`."""

import sys

from gradual_lightning.report.cli import main

sys.exit(main())
