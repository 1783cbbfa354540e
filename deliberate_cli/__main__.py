"""`python -m deliberate_cli` is `dacli` (useful under `accelerate launch -m deliberate_cli train ...`)."""
from .cli import main

if __name__ == "__main__":
    main()
