"""`python -m deliberate_cli` is `dacli`. (Not for `accelerate launch`: the train stage starts its own
processes, train.num_processes.)"""
from .cli import main

if __name__ == "__main__":
    main()
