"""``python -m dpsynth`` (and ``torchrun -m dpsynth train ...``): the command line."""

from dpsynth.cli import main

if __name__ == "__main__":
    main()
