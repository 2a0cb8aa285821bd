"""Print the course's notebooks in order (optionally a subset), one per line, for the Makefile."""

import sys

from common.course import select_notebooks

if __name__ == "__main__":
    print("\n".join(nb.as_posix() for nb in select_notebooks(sys.argv[1:])))
