import os

# Imported before conftest.py (which imports torch): see dpsynth/__init__.py for why waits are passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
