"""``python -m bstune._workers``: one worker process (see ``bstune._workers._worker``)."""

import sys

from bstune._workers._worker import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
