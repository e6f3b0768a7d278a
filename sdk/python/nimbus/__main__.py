"""`python3 -m nimbus`: the worker process (see worker.py). The host starts it as
`python3 -c "from nimbus.worker import main; main()"`, which skips runpy's imports."""
from .worker import main

main()
