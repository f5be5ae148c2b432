"""``python -m taskmesh``"""

from taskmesh.cli import main

main()
