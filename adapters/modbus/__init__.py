"""Modbus TCP source: polls PLCs, RTUs and gateways (see README.md in this folder).

The package root imports nothing: ``config`` has no protocol dependency, and ``client`` (the only module
importing pymodbus) is loaded with ``source`` when a Modbus source starts.
"""
