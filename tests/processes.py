"""Process checks shared by tests that stop runs and engines."""

import psutil


def running(proc: psutil.Process) -> bool:
    """Still running: not gone and not a zombie (a dead process whose new parent has not reaped it yet)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
