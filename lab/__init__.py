"""The lab's processes: the table of what it runs on 127.0.0.1 (lab/services.py), the certificates
and config files they read, and how each is started, checked and stopped by pid (lab/supervisor.py).

`scripts/lab` installs packages and builds (Go, debootstrap) in bash and then runs `python3 -m lab`
for the rest. Standard library only: it runs before, and without, the project's venv."""
