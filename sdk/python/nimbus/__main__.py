"""`python3 -m nimbus`: the worker process the host starts (see worker.py)."""
from .worker import main

main()
