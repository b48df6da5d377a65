"""Dagster definitions of dirsync: assets, checks, jobs, schedules, resources and their run-log helpers."""
