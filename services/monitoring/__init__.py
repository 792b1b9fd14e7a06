"""The monitoring service: platform health, confidence monitoring of programs, alerts."""
