"""spark-submit entry point: `spark-submit jobs/publish.py [--env cluster] --as-of YYYY-MM-DD`."""

import sys

from lakehouse.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
