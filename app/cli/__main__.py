import os

from app.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
main()
