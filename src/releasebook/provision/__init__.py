"""Provisioning: from a fresh Debian or Ubuntu server to one a release can go to, with
Ansible (``playbooks/provision.yml``) driven from the same inventory as releases."""
