"""``python -m sb3_apo.zoo <command> [arguments]``: every launcher behind one entry point."""

from sb3_apo.zoo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
