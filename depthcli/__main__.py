"""`python -m depthcli` → the click CLI."""

from .cli import main

if __name__ == "__main__":
    main()
