"""Warehouse domain: source loads, staging, KPI marts, publishing, schedules and the late-data sensor."""
