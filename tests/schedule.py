"""The order test files start in: slowest first, so that with two workers taking one file
at a time (``--dist=loadfile``) the long end-to-end files overlap instead of one of them
running alone at the end. Seconds a file takes (one worker's time in a full suite run
on 2 cores); a file not listed counts as quick. Stale numbers cost only an order."""

from __future__ import annotations

SECONDS: dict[str, float] = {
    "test_faults_e2e.py": 429,
    "test_ansible_e2e.py": 412,
    "test_fleet_e2e.py": 328,
    "test_undo_e2e.py": 321,
    "test_migrations_e2e.py": 251,
    "test_provision_e2e.py": 213,
    "test_library_e2e.py": 199,
    "test_asgi_e2e.py": 165,
    "test_release_e2e.py": 134,
    "test_ops_e2e.py": 118,
    "test_backups_e2e.py": 116,
    "test_local_env.py": 114,
    "test_lock.py": 15,
    "test_migration_state.py": 15,
    "test_ansible_render.py": 13,
    "test_hostile_inventory.py": 12,
    "test_ops.py": 10,
    "test_django_app.py": 9,
    "test_app_checks.py": 8,
    "test_asgi.py": 8,
    "test_example_app.py": 8,
    "test_checks.py": 6,
    "test_ssh_access.py": 6,
    "test_dry_run.py": 5,
    "test_backups.py": 5,
    "test_target.py": 5,
}

QUICK = 1.0


def expected_seconds(file_name: str) -> float:
    return SECONDS.get(file_name, QUICK)
