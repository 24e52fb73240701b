"""The simulated well field of ``ingestd demo``, served over OPC UA, Modbus TCP, MQTT JSON and Sparkplug B.

Run as a process (``python -m simulator --help``); ingestd's core never imports this package (an
import-linter contract). :mod:`.field` is the pure model; each protocol module is the only one
importing its protocol library (asyncua, pymodbus, aiomqtt, protobuf via the Sparkplug schema).
"""
