"""ingestd alarms: ISA-18.2 / IEC 62682 alarm core (pure) and the Microsoft Teams notifier.

See alarms/README.md for the model, the state diagram, the documented policy choices and the seams for the
engine (persistence, pipeline feed, operations, outbox). Nothing is imported here: import the modules.
"""
